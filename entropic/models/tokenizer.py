"""The byte-level "tokenizer" of the entropic GPT: token id = UTF-8 byte value (vocabulary 256)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ByteTokenizer"]


class ByteTokenizer:
    """UTF-8 bytes as tokens, with the call/decode interface of a Hugging Face tokenizer.

    There is no special token: `eos_token_id` is None, and decoding replaces an incomplete UTF-8
    sequence (a token cut inside a multi-byte character) with U+FFFD.

    Examples
    --------
    >>> tok = ByteTokenizer()
    >>> ids = tok("é=1", return_tensors="pt")["input_ids"]
    >>> ids.tolist(), tok.decode(ids[0].tolist())
    ([[195, 169, 61, 49]], 'é=1')
    """

    vocab_size = 256
    eos_token_id: int | None = None

    def encode(self, text: str) -> list[int]:
        """The UTF-8 bytes of `text`."""
        return list(text.encode("utf-8"))

    def __call__(self, text: str, return_tensors: str = "pt") -> dict[str, Tensor]:
        if return_tensors != "pt":
            raise ValueError(f"return_tensors must be 'pt', got {return_tensors!r}")
        return {"input_ids": torch.tensor([self.encode(text)], dtype=torch.long)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Bytes back to text; invalid sequences become U+FFFD (`skip_special_tokens` has nothing to skip)."""
        return bytes(ids).decode("utf-8", errors="replace")
