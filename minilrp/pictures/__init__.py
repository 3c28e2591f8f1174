"""Pictures: heatmaps to images (render), curve and disagreement plots (plots), the HTML report (report)."""
