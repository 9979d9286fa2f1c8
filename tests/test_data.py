"""Data: the standard-library corpus and its split, local text, synthetic tasks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from entropic.data import (
    _FILE_SEPARATOR,
    SPLITS,
    AssociativeRecall,
    ByteCorpus,
    Copying,
    MultiQueryRecall,
    cache_dir,
    split_of,
    stdlib_files,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def stdlib_corpus(tmp_path_factory: pytest.TempPathFactory) -> ByteCorpus:
    return ByteCorpus.from_stdlib(seq_len=64, cache=tmp_path_factory.mktemp("cache"))


def test_split_is_deterministic_and_proportioned():
    names = [f"pkg{i}/module_{i * 7919}.py" for i in range(20000)]
    counts = Counter(split_of(n) for n in names)
    assert counts["test"] / len(names) == pytest.approx(0.05, abs=0.01)
    assert counts["val"] / len(names) == pytest.approx(0.05, abs=0.01)
    assert [split_of(n) for n in names[:100]] == [split_of(n) for n in names[:100]]
    assert {split_of(n, val_fraction=0.0, test_fraction=0.0) for n in names[:100]} == {"train"}


def test_stdlib_files_exclude_tests_and_installed_packages():
    root, files = stdlib_files()
    parts = {p for f in files for p in f.relative_to(root).parts[:-1]}
    assert not parts & {"site-packages", "test", "tests", "__pycache__"}
    names = {f.relative_to(root).as_posix() for f in files}
    assert {"json/decoder.py", "os.py"} <= names


def test_stdlib_corpus_is_the_files_split_by_name(stdlib_corpus):
    """Each split is exactly its files, joined by the separator: sizes add up, file by file."""
    root, files = stdlib_files()
    sizes: dict[str, list[int]] = {s: [] for s in SPLITS}
    for f in files:
        sizes[split_of(f.relative_to(root).as_posix())].append(f.stat().st_size)
    for split in SPLITS:
        expected = sum(sizes[split]) + len(_FILE_SEPARATOR) * (len(sizes[split]) - 1)
        assert stdlib_corpus.n_bytes(split) == expected
    assert isinstance(stdlib_corpus.splits["train"], np.memmap)
    assert stdlib_corpus.n_bytes("train") > 10 * stdlib_corpus.n_bytes("val") > 0
    first = next(f for f in files if split_of(f.relative_to(root).as_posix()) == "train")
    head = first.read_bytes()[:200]
    assert bytes(stdlib_corpus.splits["train"][: len(head)]) == head


def test_batches_are_shifted_windows_of_the_split(stdlib_corpus):
    generator = torch.Generator().manual_seed(0)
    batch = stdlib_corpus.batch("val", 4, generator)
    assert batch.inputs.shape == batch.targets.shape == (4, 64) and batch.mask is None
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    text = bytes(stdlib_corpus.splits["val"])
    for row in range(4):
        window = bytes(batch.inputs[row].tolist()) + bytes([int(batch.targets[row, -1])])
        assert window in text
    again = stdlib_corpus.batch("val", 4, torch.Generator().manual_seed(0))
    assert torch.equal(again.inputs, batch.inputs)


def test_text_folder_and_single_file(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for i in range(60):
        (folder / f"note{i}.txt").write_text(f"note number {i}\n" * 20)
    (folder / "image.png").write_bytes(b"\x89PNG" * 100)
    corpus = ByteCorpus.from_paths(folder, seq_len=16, cache=tmp_path / "cache")
    total = sum(corpus.n_bytes(s) for s in SPLITS)
    assert total == sum(len(f"note number {i}\n" * 20) for i in range(60)) + len(_FILE_SEPARATOR) * 57
    assert b"PNG" not in bytes(corpus.splits["train"])  # only text suffixes are read
    single = tmp_path / "book.txt"
    single.write_bytes(bytes(range(256)) * 40)
    corpus = ByteCorpus.from_paths(single, seq_len=8)
    assert [corpus.n_bytes(s) for s in SPLITS] == [9216, 512, 512]


def test_text_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ByteCorpus.from_paths(tmp_path / "missing")
    (tmp_path / "small.txt").write_text("tiny")
    with pytest.raises(ValueError, match=r"split 'train' has 3 bytes, fewer than seq_len \+ 1 = 129"):
        ByteCorpus.from_paths(tmp_path / "small.txt")


def _docs(n: int, tag: str) -> list[str]:
    return [f"{tag} {i}: " + "é ipsum " * (5 + i % 7) for i in range(n)]


def _joined(docs: list[str]) -> bytes:
    return _FILE_SEPARATOR.join(d.encode("utf-8") for d in docs)


def test_hf_single_split_is_divided_by_document(tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = _docs(400, "doc")
    corpus = ByteCorpus.from_hf(datasets.Dataset.from_dict({"text": docs}), seq_len=16, cache=tmp_path)
    for s in SPLITS:
        want = _joined([d for i, d in enumerate(docs) if split_of(str(i)) == s])
        assert bytes(corpus.splits[s]) == want, s
    # a save_to_disk folder, read by path, is the same corpus (and hits the same cache)
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "saved"))
    again = ByteCorpus.from_hf(tmp_path / "saved", seq_len=16, cache=tmp_path / "other")
    assert all(bytes(again.splits[s]) == bytes(corpus.splits[s]) for s in SPLITS)
    batch = again.batch("val", 3, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (3, 16) and torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])


def test_hf_keeps_its_splits_and_halves_a_lone_held_out_one(tmp_path):
    datasets = pytest.importorskip("datasets")
    train, val, test = _docs(30, "train"), _docs(10, "val"), _docs(8, "test")
    full = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"body": train}),
            "validation": datasets.Dataset.from_dict({"body": val}),
            "test": datasets.Dataset.from_dict({"body": test}),
            "unsupervised": datasets.Dataset.from_dict({"body": ["ignored"] * 5}),
        }
    )
    corpus = ByteCorpus.from_hf(full, text_field="body", seq_len=8, cache=tmp_path)
    assert [bytes(corpus.splits[s]) for s in SPLITS] == [_joined(train), _joined(val), _joined(test)]
    no_test = datasets.DatasetDict({"train": full["train"], "validation": full["validation"]})
    corpus = ByteCorpus.from_hf(no_test, text_field="body", seq_len=8, max_documents=20, cache=tmp_path)
    assert bytes(corpus.splits["train"]) == _joined(train[:20])
    assert bytes(corpus.splits["val"]) == _joined(val[:5]) and bytes(corpus.splits["test"]) == _joined(
        val[5:]
    )


def test_hf_errors(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": _docs(50, "d"), "n": list(range(50))})
    with pytest.raises(
        ValueError, match=r"text_field 'body' is not a column of split 'all': \['text', 'n'\]"
    ):
        ByteCorpus.from_hf(ds, text_field="body", cache=tmp_path)
    with pytest.raises(ValueError, match=r"text_field 'n' must hold strings, got int in document 0"):
        ByteCorpus.from_hf(ds, text_field="n", seq_len=4, cache=tmp_path)
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.tmp"))  # nothing half-written
    two = datasets.DatasetDict({"a": ds, "b": ds})
    with pytest.raises(ValueError, match=r"splits \['a', 'b'\] needs 'train' and 'validation'"):
        ByteCorpus.from_hf(two, cache=tmp_path)
    with pytest.raises(ValueError, match=r"max_documents must be"):
        ByteCorpus.from_hf(ds, max_documents=0, cache=tmp_path)
    with pytest.raises(TypeError, match="name must be a dataset name, a folder or a datasets object"):
        ByteCorpus.from_hf(42, cache=tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)
    with pytest.raises(
        ImportError, match=r"needs the Hugging Face 'datasets' package: pip install 'entropic\[data\]'"
    ):
        ByteCorpus.from_hf("some/dataset")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ENTROPIC_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ENTROPIC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "entropic"


def test_a_corpus_without_a_cache_folder_is_cached_in_cache_dir(tmp_path):
    for name in ("m0.py", "m23.py", "m35.py"):  # one file per split (train, test, val)
        (tmp_path / name).write_text(f"# {name}\n" * 20)
    files = sorted(tmp_path.glob("*.py"))
    corpus = ByteCorpus.from_files(tmp_path, files, seq_len=8, cache=None, label="probe")
    cached = Path(corpus.splits["train"].filename)
    assert cached.parent.parent == cache_dir() and cached.parent.name.startswith("probe-")
    assert cached.read_bytes() == bytes(corpus.splits["train"]) and len(cached.read_bytes()) > 0


@pytest.mark.slow
def test_the_test_suite_caches_in_a_temp_folder_of_its_run(tmp_path):
    """tests/conftest.py: without $ENTROPIC_CACHE a run caches in the system temp, never in the home folder,
    and removes that folder when it ends; with $ENTROPIC_CACHE set, the run caches there."""
    home, temp, chosen = tmp_path / "home", tmp_path / "tmp", tmp_path / "chosen"
    home.mkdir()
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "ENTROPIC_", "XDG_"))}
    env |= {"HOME": str(home), "TMPDIR": str(temp)}
    probe = "tests/test_data.py::test_a_corpus_without_a_cache_folder_is_cached_in_cache_dir"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", probe]
    for extra in ({}, {"ENTROPIC_CACHE": str(chosen)}):
        done = subprocess.run(command, cwd=ROOT, env=env | extra, capture_output=True, text=True)
        assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
    assert not (home / ".cache" / "entropic").exists()
    assert not list(temp.glob("entropic-tests-*"))  # removed at the end of the first run
    assert len(list(chosen.glob("probe-*/train.bin"))) == 1  # the second run's, where it was told


def test_associative_recall_answer_is_the_stored_value():
    task = AssociativeRecall(n_pairs=6)
    batch = task.batch("train", 32, torch.Generator().manual_seed(1))
    assert batch.inputs.shape == (32, task.seq_len) and batch.mask.sum(1).tolist() == [1] * 32
    for x, y, m in zip(batch.inputs, batch.targets, batch.mask, strict=True):
        keys, values = x[:12:2], x[1:12:2]
        assert len(set(keys.tolist())) == 6 and int(keys.max()) < 128 and int(values.min()) >= 128
        assert int(x[12]) == AssociativeRecall.SEPARATOR and AssociativeRecall.SEPARATOR not in keys.tolist()
        query = int(x[13])
        assert int(y[m][0]) == int(values[keys == query][0])


def test_multi_query_recall_answers_are_the_stored_values():
    task = MultiQueryRecall(n_pairs=6, n_queries=4)
    batch = task.batch("test", 32, torch.Generator().manual_seed(3))
    assert batch.inputs.shape == batch.targets.shape == (32, task.seq_len) == (32, 20)
    assert batch.mask.sum(1).tolist() == [4] * 32
    for x, y, m in zip(batch.inputs, batch.targets, batch.mask, strict=True):
        store = dict(zip(x[:12:2].tolist(), x[1:12:2].tolist(), strict=True))
        assert len(store) == 6 and max(store) < 128 and min(store.values()) >= 128
        assert MultiQueryRecall.SEPARATOR not in store and int(x[12]) == MultiQueryRecall.SEPARATOR
        queries = x[m].tolist()  # the inputs that predict an answer hold the queries
        assert len(set(queries)) == 4 and set(queries) <= set(store)
        assert y[m].tolist() == [store[q] for q in queries]
        assert x[13:].tolist()[1::2] == y[m].tolist()[:-1]  # each answer is the next query's left neighbour
    assert MultiQueryRecall(5).n_queries == 5


def test_copying_targets_repeat_the_source():
    task = Copying(length=5, vocab=10)
    batch = task.batch("val", 8, torch.Generator().manual_seed(2))
    assert batch.inputs.shape == (8, 10)
    source = batch.inputs[:, :5]
    assert bool((batch.inputs[:, 5] == Copying.MARKER).all())
    assert torch.equal(batch.targets[batch.mask].view(8, 5), source)
    assert int(source.max()) < 10


def test_synthetic_task_errors():
    with pytest.raises(ValueError, match=r"n_pairs must be an integer in \[1, 127\], got 200"):
        AssociativeRecall(n_pairs=200)
    with pytest.raises(ValueError, match=r"n_queries must be an integer in \[1, 4\], got 5"):
        MultiQueryRecall(n_pairs=4, n_queries=5)
    with pytest.raises(ValueError, match="split must be one of"):
        Copying().batch("dev", 2)
