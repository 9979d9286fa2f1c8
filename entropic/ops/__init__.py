"""Ops: one folder per op (dispatch, PyTorch and Triton backends, float64 reference)."""
