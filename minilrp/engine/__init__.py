"""The engine: layers with forward caches and true backward passes, their numba kernels (each with a NumPy twin), and the sequential network."""
