"""Integrations with other libraries; each submodule imports its library (``pip install entropic[hf]``).

* `entropic.integrations.hf`: Hugging Face ``transformers`` attention and logits processors.
* `entropic.integrations.vllm`: entropic's samplers as a vLLM logits processor (vLLM in an environment of its
  own: `make test-vllm`).
"""
