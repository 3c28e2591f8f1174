"""Models: the .npz weight format (io), the bundled models and samples (data), importers from PyTorch and ONNX (importers)."""
