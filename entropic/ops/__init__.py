"""Ops: one folder per op (dispatch, PyTorch backend, Triton backend, reference)."""
