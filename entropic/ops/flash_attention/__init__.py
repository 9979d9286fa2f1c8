"""Dense softmax (flash) attention with statistics: Triton kernel (`triton`) and oracle (`reference`).

Softmax attention is α-entmax attention at α = 1: the dispatch between the two attention kernels
(`entropic.ops.entmax_attention.dispatch`) and the PyTorch path (the α = 1 rows of
`entropic.ops.entmax_attention.torch`, or SDPA when no statistics are asked) are shared with that op.
"""
