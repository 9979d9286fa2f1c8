"""Entropy, varentropy and log Z of softmax rows: Triton kernel (`triton`) and oracle (`reference`)."""
