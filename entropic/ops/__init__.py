"""The package's ops, one folder each: dispatch, PyTorch backend, Triton backend, float64 reference."""
