"""Bundled weight files and sample images (data only; see README.md here)."""
