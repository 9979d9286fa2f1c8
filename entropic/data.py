"""Training data for the byte-level GPT: a built-in corpus, local text, and synthetic recall/copy tasks.

Every dataset hands out `Batch` es of byte-token sequences through one method,
``dataset.batch(split, batch_size, generator) -> Batch``, and says how many bytes one token encodes
through `Batch.mask` (the positions the loss counts).

* `ByteCorpus.from_stdlib`: the source files of the running interpreter's standard library, present on
  every machine with no download. Files are split deterministically **by file** (a CRC32 of the path
  relative to the library root) into train/val/test, concatenated, and cached as uint8 memmaps.
* `ByteCorpus.from_paths`: any local text files or folders, split the same way.
* `ByteCorpus.from_hf`: a Hugging Face dataset (the ``datasets`` package, ``pip install
  'entropic[data]'``): by name from the hub or its local cache, a folder written by ``save_to_disk``,
  or a loaded ``Dataset``/``DatasetDict``; its own splits when it has them, else split by document.
* `AssociativeRecall`, `MultiQueryRecall`, `Copying`: tasks generated in code whose answers need attention
  to a few exact positions, for controlled sparsity studies; only the answer positions count in the loss.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from entropic._validation import check_param

__all__ = [
    "SPLITS",
    "AssociativeRecall",
    "Batch",
    "ByteCorpus",
    "Copying",
    "MultiQueryRecall",
    "cache_dir",
    "split_of",
    "stdlib_files",
]

Split = Literal["train", "val", "test"]
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Folders of the standard library left out of the corpus: installed packages and test suites.
_STDLIB_EXCLUDED = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"}
# A file separator, so that a sequence crossing two files sees where one ends.
_FILE_SEPARATOR = b"\n\x00\n"


@dataclass(frozen=True)
class Batch:
    """One training batch.

    Attributes
    ----------
    inputs : Tensor
        ``(B, N)`` int64 token ids.
    targets : Tensor
        ``(B, N)`` int64, the next token of every input position.
    mask : Tensor or None
        ``(B, N)`` bool, the positions whose loss counts; None means all of them.
    """

    inputs: Tensor
    targets: Tensor
    mask: Tensor | None = None


def cache_dir() -> Path:
    """Corpus cache: ``$ENTROPIC_CACHE``, else ``$XDG_CACHE_HOME/entropic``, else ``~/.cache/entropic``."""
    if os.environ.get("ENTROPIC_CACHE"):
        return Path(os.environ["ENTROPIC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "entropic"


def split_of(name: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> Split:
    """The split of a file from its relative path: ``u = crc32(name) / 2³²`` → test, val, then train.

    Stable across machines, Python versions and file orders; a file never changes split when others
    are added.

    Examples
    --------
    >>> [split_of(n) for n in ("json/decoder.py", "asyncio/tasks.py")]
    ['train', 'train']
    """
    u = zlib.crc32(name.encode()) / 2**32
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def stdlib_files() -> tuple[Path, list[Path]]:
    """The root of the running interpreter's standard library and its ``*.py`` files (sorted).

    Installed packages (site-packages) and the test suites are excluded.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        f for f in root.rglob("*.py") if not _STDLIB_EXCLUDED.intersection(f.relative_to(root).parts[:-1])
    )
    if not files:
        raise FileNotFoundError(f"no Python source files under the standard library '{root}'")
    return root, files


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class ByteCorpus:
    """Three uint8 arrays (train/val/test) of concatenated files, sampled as random windows.

    Parameters
    ----------
    splits : mapping of str to np.ndarray
        ``{"train": ..., "val": ..., "test": ...}`` 1-D uint8 arrays (memmaps when cached).
    seq_len : int
        Tokens per sequence N; a window of N + 1 bytes gives inputs and shifted targets.
    """

    def __init__(self, splits: dict[str, np.ndarray], seq_len: int) -> None:
        check_param(seq_len, "seq_len", 1, float("inf"), integer=True)
        if set(splits) != set(SPLITS):
            raise ValueError(f"splits must have the keys {SPLITS}, got {sorted(splits)}")
        for name, data in splits.items():
            if data.dtype != np.uint8 or data.ndim != 1:
                raise ValueError(f"split {name!r} must be a 1-D uint8 array, got {data.dtype} {data.shape}")
            if len(data) < seq_len + 1:
                raise ValueError(
                    f"split {name!r} has {len(data)} bytes, fewer than seq_len + 1 = {seq_len + 1}; "
                    "use more text or a shorter seq_len"
                )
        self.splits, self.seq_len = splits, seq_len

    @classmethod
    def from_stdlib(cls, seq_len: int = 128, cache: str | os.PathLike | None = None) -> ByteCorpus:
        """The standard library corpus of the running interpreter (built once, then read from the cache)."""
        root, files = stdlib_files()
        return cls.from_files(root, files, seq_len=seq_len, cache=cache, label="stdlib")

    @classmethod
    def from_paths(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        seq_len: int = 128,
        suffixes: Sequence[str] = (".py", ".txt", ".md", ".rst"),
        cache: str | os.PathLike | None = None,
    ) -> ByteCorpus:
        """Local text: files, and the files with one of `suffixes` under folders.

        A single file (no other to split by) is cut by position instead: the first 90% train, then 5%
        validation and 5% test.
        """
        paths = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
        files: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir():
                files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            elif p.is_file():
                files.append(p)
            else:
                raise FileNotFoundError(f"data path '{p}' does not exist")
        if not files:
            raise ValueError(f"no text files with suffixes {tuple(suffixes)} under {[str(p) for p in paths]}")
        if len(files) == 1:
            data = np.frombuffer(files[0].read_bytes(), dtype=np.uint8)
            a, b = int(0.9 * len(data)), int(0.95 * len(data))
            return cls({"train": data[:a], "val": data[a:b], "test": data[b:]}, seq_len)
        root = Path(os.path.commonpath([f.resolve().parent for f in files]))
        return cls.from_files(root, [f.resolve() for f in files], seq_len=seq_len, cache=cache, label="text")

    @classmethod
    def from_files(
        cls,
        root: Path,
        files: Iterable[Path],
        *,
        seq_len: int,
        cache: str | os.PathLike | None,
        label: str,
    ) -> ByteCorpus:
        """Split `files` by their path relative to `root`, cache each split as ``<key>/<split>.bin``.

        The cache key hashes the relative paths, sizes and modification times, so an edited or added
        file builds a new cache instead of reading a stale one.
        """
        files = sorted(files)
        names = [f.relative_to(root).as_posix() for f in files]
        digest = hashlib.sha256()
        for name, f in zip(names, files, strict=True):
            st = f.stat()
            digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        folder = Path(cache) if cache is not None else cache_dir()
        folder = folder / f"{label}-{digest.hexdigest()[:16]}"
        paths = {s: folder / f"{s}.bin" for s in SPLITS}
        if not all(p.exists() for p in paths.values()):
            folder.mkdir(parents=True, exist_ok=True)
            parts: dict[str, list[bytes]] = {s: [] for s in SPLITS}
            for name, f in zip(names, files, strict=True):
                parts[split_of(name)].append(f.read_bytes())
            for s in SPLITS:
                _write_atomic(paths[s], _FILE_SEPARATOR.join(parts[s]))
        splits = {s: np.memmap(paths[s], dtype=np.uint8, mode="r") for s in SPLITS}
        return cls(splits, seq_len)

    @classmethod
    def from_hf(
        cls,
        name: str | os.PathLike | Any,
        config: str | None = None,
        *,
        text_field: str = "text",
        seq_len: int = 128,
        revision: str | None = None,
        max_documents: int | None = None,
        cache: str | os.PathLike | None = None,
    ) -> ByteCorpus:
        """A Hugging Face dataset as bytes: the UTF-8 `text_field` of every document.

        Parameters
        ----------
        name : str, path or dataset
            A dataset name for ``datasets.load_dataset`` (with `config` and `revision`), a folder
            written by ``save_to_disk``, or an already loaded ``Dataset`` / ``DatasetDict``.
        text_field : str
            The string column to read.
        max_documents : int, optional
            Read at most this many documents per split (the first ones), for quick runs.
        cache : path, optional
            Cache folder (`cache_dir` by default); keyed by the dataset's fingerprint.

        Splits: a dataset with a "train" split and held-out ones ("validation", "valid" or "val", and
        "test") keeps them; when only one held-out split exists, its first half of documents validates
        and its second half tests. A single split (or a ``Dataset``) is divided by document index with
        `split_of`. Documents are joined by the same separator as files.
        """
        check_param(seq_len, "seq_len", 1, float("inf"), integer=True)
        if max_documents is not None:
            check_param(max_documents, "max_documents", 1, float("inf"), integer=True)
        dataset = _load_hf(name, config, revision)
        parts = _hf_splits(dataset, text_field, max_documents)
        fingerprint = hashlib.sha256(
            "\0".join(f"{s}:{_fingerprint(d)}:{n}" for s, (d, n) in sorted(parts.items())).encode()
        )
        fingerprint.update(f"\0{text_field}\0{max_documents}".encode())
        folder = (Path(cache) if cache is not None else cache_dir()) / f"hf-{fingerprint.hexdigest()[:16]}"
        paths = {s: folder / f"{s}.bin" for s in SPLITS}
        if not all(p.exists() for p in paths.values()):
            folder.mkdir(parents=True, exist_ok=True)
            _write_hf_splits(parts, text_field, paths)
        return cls({s: np.memmap(paths[s], dtype=np.uint8, mode="r") for s in SPLITS}, seq_len)

    def n_bytes(self, split: Split) -> int:
        """Size of a split in bytes."""
        return len(self.splits[split])

    def batch(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """`batch_size` windows at uniform random offsets of `split` (offsets drawn from `generator`)."""
        data = self.splits[split]
        starts = torch.randint(0, len(data) - self.seq_len, (batch_size,), generator=generator).tolist()
        windows = np.stack([data[s : s + self.seq_len + 1] for s in starts]).astype(np.int64)
        tokens = torch.from_numpy(windows)  # (B, N + 1)
        return Batch(tokens[:, :-1], tokens[:, 1:])


# Hub split names → ours.
_HF_SPLIT_OF = {"train": "train", "validation": "val", "valid": "val", "val": "val", "test": "test"}


def _load_hf(name: Any, config: str | None, revision: str | None) -> Any:
    """A ``Dataset``/``DatasetDict`` from a name, a ``save_to_disk`` folder, or as given."""
    if not isinstance(name, str | os.PathLike):
        if not hasattr(name, "column_names"):
            raise TypeError(
                f"from_hf: name must be a dataset name, a folder or a datasets object, got {name!r}"
            )
        return name
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "ByteCorpus.from_hf needs the Hugging Face 'datasets' package: pip install 'entropic[data]'"
        ) from e
    if Path(name).is_dir() and any(
        (Path(name) / f).exists() for f in ("dataset_info.json", "dataset_dict.json")
    ):
        return datasets.load_from_disk(str(name))
    return datasets.load_dataset(str(name), config, revision=revision)


def _hf_splits(dataset: Any, text_field: str, max_documents: int | None) -> dict[str, tuple[Any, int]]:
    """``{source split: (dataset, documents to read)}``; a single pooled split is named "all"."""
    named = {s: dataset[s] for s in dataset} if isinstance(dataset, dict) else {"all": dataset}
    held_out = [s for s in named if s in _HF_SPLIT_OF and s != "train"]
    if len(named) == 1:
        parts = {"all": next(iter(named.values()))}
    elif "train" in named and held_out:
        parts = {s: named[s] for s in ("train", *held_out)}
    else:
        raise ValueError(
            f"from_hf: a dataset with splits {sorted(named)} needs 'train' and 'validation' (or 'valid', "
            "'val') or 'test', or a single split to divide by document"
        )
    out = {}
    for source, d in parts.items():
        if text_field not in d.column_names:
            raise ValueError(
                f"from_hf: text_field {text_field!r} is not a column of split {source!r}: {d.column_names}"
            )
        out[source] = (d, len(d) if max_documents is None else min(max_documents, len(d)))
    return out


def _write_hf_splits(parts: dict[str, tuple[Any, int]], text_field: str, paths: dict[str, Path]) -> None:
    """Stream the documents of `parts` into the three split files (atomically, each complete or absent)."""
    held_out = {_HF_SPLIT_OF[s] for s in parts if s != "all"} - {"train"}
    # one held-out split only: its first half validates, its second half tests
    halve = next((s for s in parts if s != "all" and held_out == {_HF_SPLIT_OF[s]}), None)
    tmp = {s: p.with_name(f".{p.name}.{os.getpid()}.tmp") for s, p in paths.items()}
    files = {s: tmp[s].open("wb") for s in SPLITS}
    first = dict.fromkeys(SPLITS, True)
    try:
        for source, (d, n) in parts.items():
            index = 0
            for chunk in d.select(range(n)).select_columns([text_field]).iter(batch_size=1024):
                for text in chunk[text_field]:
                    if not isinstance(text, str):
                        raise ValueError(
                            f"from_hf: text_field {text_field!r} must hold strings, got "
                            f"{type(text).__name__} in document {index} of split {source!r}"
                        )
                    if source == "all":
                        split = split_of(str(index))
                    elif source == halve:
                        split = "val" if index < n // 2 else "test"
                    else:
                        split = _HF_SPLIT_OF[source]
                    files[split].write((b"" if first[split] else _FILE_SEPARATOR) + text.encode("utf-8"))
                    first[split] = False
                    index += 1
        for s in SPLITS:
            files[s].close()
            os.replace(tmp[s], paths[s])
    finally:
        for s in SPLITS:
            files[s].close()
            tmp[s].unlink(missing_ok=True)


def _fingerprint(dataset: Any) -> str:
    return str(getattr(dataset, "_fingerprint", None) or hashlib.sha256(repr(dataset).encode()).hexdigest())


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


class AssociativeRecall:
    """Key-value recall: ``k1 v1 k2 v2 … kn vn | q → v``, the value stored with key ``q``.

    Keys are distinct bytes from ``[0, 128)`` and values bytes from ``[128, 256)``; the query is one of
    the keys, and the separator ``ord("|")`` is excluded from the keys. The loss counts only the answer
    position, so solving the task means attending to exactly one earlier position: the ideal attention
    is one-sparse. Chance level is ``log2(128) = 7`` bits per answer.

    Parameters
    ----------
    n_pairs : int
        Key-value pairs per sequence, in [1, 127].
    """

    SEPARATOR = ord("|")

    def __init__(self, n_pairs: int = 16) -> None:
        check_param(n_pairs, "n_pairs", 1, 127, integer=True)
        self.n_pairs = n_pairs
        self.seq_len = 2 * n_pairs + 2

    def batch(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Fresh random sequences ``(B, 2n + 2)``; every split draws from the same distribution."""
        _check_split(split)
        n = self.n_pairs
        candidates = torch.tensor([i for i in range(128) if i != self.SEPARATOR])
        order = torch.rand(batch_size, len(candidates), generator=generator).argsort(-1)[:, :n]
        keys = candidates[order]  # (B, n) distinct per row
        values = torch.randint(128, 256, (batch_size, n), generator=generator)
        pick = torch.randint(0, n, (batch_size, 1), generator=generator)
        query, answer = keys.gather(1, pick), values.gather(1, pick)
        pairs = torch.stack([keys, values], -1).flatten(1)  # (B, 2n)
        sep = torch.full((batch_size, 1), self.SEPARATOR)
        seq = torch.cat([pairs, sep, query, answer], 1)  # (B, 2n + 3)
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, -1] = True  # the input position holding the query predicts the answer
        return Batch(seq[:, :-1], seq[:, 1:], mask)


class MultiQueryRecall:
    """Multi-query associative recall (MQAR, Arora et al. 2023, "Zoology"):
    ``k1 v1 … kn vn | q1 a1 … qm am``, each query a stored key (distinct, in random order) and each answer
    its value.

    Keys are distinct bytes from ``[0, 128)`` without the separator ``ord("|")``, values bytes from
    ``[128, 256)``. The loss counts the m answers: the input position holding ``q_i`` predicts ``a_i``, so
    each answer needs attention to one position among the 2n stored ones (and the earlier queries), and
    a model's recall is its accuracy on those positions. Chance is 1/128 per answer. Sequences are
    ``2n + 2m`` tokens (inputs and targets); the same task at a larger n is a longer context.

    Parameters
    ----------
    n_pairs : int
        Key-value pairs per sequence, in [1, 127].
    n_queries : int, optional
        Queries per sequence, in [1, n_pairs]; all of the pairs by default.
    """

    SEPARATOR = ord("|")

    def __init__(self, n_pairs: int = 16, n_queries: int | None = None) -> None:
        check_param(n_pairs, "n_pairs", 1, 127, integer=True)
        n_queries = n_pairs if n_queries is None else n_queries
        check_param(n_queries, "n_queries", 1, n_pairs, integer=True)
        self.n_pairs, self.n_queries = n_pairs, n_queries
        self.seq_len = 2 * n_pairs + 2 * n_queries

    def batch(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Fresh random sequences ``(B, 2n + 2m)``; every split draws from the same distribution."""
        _check_split(split)
        n, m = self.n_pairs, self.n_queries
        candidates = torch.tensor([i for i in range(128) if i != self.SEPARATOR])
        order = torch.rand(batch_size, len(candidates), generator=generator).argsort(-1)[:, :n]
        keys = candidates[order]  # (B, n) distinct per row
        values = torch.randint(128, 256, (batch_size, n), generator=generator)
        pick = torch.rand(batch_size, n, generator=generator).argsort(-1)[:, :m]  # distinct queries
        queries = torch.stack([keys.gather(1, pick), values.gather(1, pick)], -1).flatten(1)  # (B, 2m)
        pairs = torch.stack([keys, values], -1).flatten(1)
        sep = torch.full((batch_size, 1), self.SEPARATOR)
        seq = torch.cat([pairs, sep, queries], 1)  # (B, 2n + 1 + 2m)
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, 2 * n + 1 :: 2] = True  # the inputs holding a query predict its answer
        return Batch(seq[:, :-1], seq[:, 1:], mask)


class Copying:
    """Copy a random string after a marker: ``x1 … xL | x1 … xL``; the loss counts the copy only.

    Symbols are bytes from ``[0, vocab)`` excluding the marker ``ord("|")``. Each copied symbol needs
    attention to one position L + 1 steps back (a sparse, position-determined pattern).

    Parameters
    ----------
    length : int
        Symbols to copy L.
    vocab : int
        Alphabet size, in [2, 256].
    """

    MARKER = ord("|")

    def __init__(self, length: int = 32, vocab: int = 64) -> None:
        check_param(length, "length", 1, float("inf"), integer=True)
        check_param(vocab, "vocab", 2, 256, integer=True)
        self.length, self.vocab = length, vocab
        self.seq_len = 2 * length

    def batch(self, split: Split, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """Fresh random sequences ``(B, 2L)``; every split draws from the same distribution."""
        _check_split(split)
        symbols = torch.tensor([i for i in range(self.vocab) if i != self.MARKER])
        source = symbols[torch.randint(0, len(symbols), (batch_size, self.length), generator=generator)]
        marker = torch.full((batch_size, 1), self.MARKER)
        seq = torch.cat([source, marker, source], 1)  # (B, 2L + 1)
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, self.length :] = True  # from the marker on, each position predicts a copied symbol
        return Batch(seq[:, :-1], seq[:, 1:], mask)
