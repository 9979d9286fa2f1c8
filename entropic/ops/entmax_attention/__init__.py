"""α-entmax attention: which backend serves a call, and why not the Triton kernels."""
