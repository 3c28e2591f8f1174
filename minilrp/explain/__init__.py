"""Explanations, the readable reference path: LRP rules (rules.py), composites and presets, the relevance ledger, and sensitivity analysis from the engine's backward pass."""
