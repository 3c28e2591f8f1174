"""Evaluating heatmaps: region perturbation (regions, orderings, fills, curves, AOPC) and the experiment runners."""
