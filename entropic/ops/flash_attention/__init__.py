"""Dense softmax (flash) attention with statistics: Triton kernel (`triton`) and oracle (`reference`)."""
