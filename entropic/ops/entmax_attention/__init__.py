"""α-entmax attention: schedule, PyTorch path (`torch`), Triton kernel (`triton`), oracle (`reference`)."""
