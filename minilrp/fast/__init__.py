"""The fast path: a faster implementation of the reference LRP rules, kept apart from them.

``net.relevance(x, composite)`` runs it (``fast=True``, the default); ``fast=False`` runs the
readable rules of minilrp/explain/rules.py. Both give the same heatmaps and ledgers (float64
to 1e-12, float32 to 1e-5, relative): tests/test_fast_path.py holds them equal for every rule,
preset, layer type, input sign and dtype. Every speed technique lives here and nowhere else:

- relevance.py: the driver; its forward also computes the products P = a w+, Q = a w- the
  rules need, from the same im2col columns; the per-network ``State`` keeps what is worth
  keeping between calls (a preset's rules, rule-modified weights, window counts);
- rules.py: a fast twin per rule (which ones, and what each saves, is said there);
- kernels.py: the numba kernels only LRP needs (fused ratios, tie-split max-pool relevance),
  each with a NumPy twin;
- inference.py: an inference-only forward for scoring many images (no caches, ReLU and
  max pool fused where they commute), used by region perturbation.
"""
