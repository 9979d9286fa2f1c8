"""Integrations with other libraries; each submodule imports its library (``pip install entropic[hf]``).

* `entropic.integrations.hf`: Hugging Face ``transformers`` logits processors.
"""
