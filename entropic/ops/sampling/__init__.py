"""The fused sampling step: Triton kernel (`triton`) and oracle (`reference`)."""
