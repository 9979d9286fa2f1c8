"""The ops: one folder per op, each with its dispatch, PyTorch and Triton backends and float64 reference.

=====================  ==========================================================================
folder                 op
=====================  ==========================================================================
``entropy/``           entropy, varentropy and log-partition of a softmax row (one pass, online)
``flash_attention/``   dense softmax attention that also returns its attention statistics
``entmax_attention/``  block-sparse α-entmax attention, fixed, per-head, per-query, learned or scheduled α
``sampling/``          the fused sampling step: temperature, top-nσ, top-k, top-p, min-p, p-less, dynamic
                       temperature and an exact draw
=====================  ==========================================================================

Softmax attention is α-entmax attention at α = 1, so ``flash_attention/`` holds its kernel and oracle and
shares ``entmax_attention/``'s dispatch and PyTorch path. ``dispatch.py`` holds the one rule every entry point
asks ("can the kernel run here, and if not, why"), with one table of supported dtypes and head dims.
``_attention.py`` and ``_online.py`` are the Triton pieces the kernels share (tile addressing, the online
(max, Σe, mean, M2) state); ``_attention_host.py`` is the attention kernels' Triton-free host side (tile
tables, input checks). The types the ops return live in `entropic.types`. Nothing outside an op's folder
imports its private names.
"""
