"""experiments.results: the results writer, the resumable results file every long experiment appends to, and
its reader."""

from __future__ import annotations

from experiments.results import RowFile, read_csv, write_csv


def test_row_file_is_created_by_its_first_rows_and_reread_by_a_restart(tmp_path):
    path = tmp_path / "sub" / "rows.csv"
    store = RowFile(path, ("a", "b"), "python -m x --n 1")
    assert store.rows == [] and not path.exists() and store.commands == "python -m x --n 1"
    store.add([{"a": 1, "b": 2.5}])
    store.add([{"a": 3, "b": "x"}])
    assert store.rows == [{"a": 1, "b": 2.5}, {"a": 3, "b": "x"}]  # as given
    lines = path.read_text().splitlines()
    assert lines == ["# python -m x --n 1", "a,b", "1,2.5", "3,x"]
    again = RowFile(path, ("a", "b"), "python -m x --n 2")  # the creating command stays alone
    assert again.rows == [{"a": "1", "b": "2.5"}, {"a": "3", "b": "x"}] == read_csv(path)
    assert path.read_text().splitlines()[0] == "# python -m x --n 1"
    parsed = RowFile(path, ("a", "b"), "ignored", parse=lambda r: {**r, "a": int(r["a"])})
    assert [r["a"] for r in parsed.rows] == [1, 3]


def test_row_file_can_keep_every_command_that_wrote_it(tmp_path):
    path = tmp_path / "rows.csv"
    RowFile(path, ("a",), "run 1", every_command=True).add([{"a": 1}])
    RowFile(path, ("a",), "run 1", every_command=True)  # already there: unchanged
    second = RowFile(path, ("a",), "run 2", every_command=True)
    second.add([{"a": 2}])
    assert path.read_text().splitlines() == ["# run 1; run 2", "a", "1", "2"]
    assert second.commands == "run 1; run 2"
    # two runs started before the file existed: the one adding second still puts its command there
    late = tmp_path / "late.csv"
    early, later = (RowFile(late, ("a",), f"run {i}", every_command=True) for i in (3, 4))
    early.add([{"a": 3}])
    later.add([{"a": 4}])
    assert late.read_text().splitlines() == ["# run 3; run 4", "a", "3", "4"]
    legacy = tmp_path / "legacy.csv"  # a file written before it had a command line
    legacy.write_text("a\n5\n")
    RowFile(legacy, ("a",), "run 3", every_command=True)
    assert legacy.read_text().splitlines() == ["# run 3", "a", "5"]


def test_write_csv_heads_the_file_with_the_command_that_wrote_it(tmp_path, monkeypatch):
    rows = [{"a": 1, "b": "x,y"}]
    write_csv(tmp_path / "sub" / "m.csv", rows, ("a", "b"), "experiments.m", ["--n", "1"])
    assert (tmp_path / "sub" / "m.csv").read_text().splitlines() == [
        "# python -m experiments.m --n 1",
        "a,b",
        '1,"x,y"',
    ]
    monkeypatch.setattr("sys.argv", ["m.py", "--n", "2"])
    write_csv(tmp_path / "argv.csv", rows, ("a", "b"), "experiments.m", None)  # the process's arguments
    assert (tmp_path / "argv.csv").read_text().splitlines()[0] == "# python -m experiments.m --n 2"
    write_csv(tmp_path / "given.csv", rows, ("a", "b"), command="run 1; run 2")  # as given
    assert (tmp_path / "given.csv").read_text().splitlines()[0] == "# run 1; run 2"
    write_csv(tmp_path / "plain.csv", rows, ("a", "b"))  # no command: a plain CSV
    assert (tmp_path / "plain.csv").read_bytes() == b'a,b\r\n1,"x,y"\r\n'
    assert read_csv(tmp_path / "plain.csv") == read_csv(tmp_path / "given.csv") == [{"a": "1", "b": "x,y"}]


def _grow(path: str, name: str, count: int) -> None:
    table = RowFile(path, ["name", "i", "pad"], f"grow {name}", every_command=True)
    for i in range(count):
        table.add([{"name": name, "i": i, "pad": "x" * 200}])


def test_row_file_grown_by_several_processes_at_once_stays_whole(tmp_path):
    """Two processes add rows to one file at the same time (as two variants of one study would): one
    header, both commands on the first line, every row whole; `current` sees the other's rows."""
    import multiprocessing

    path = str(tmp_path / "t.csv")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_grow, args=(path, name, 300)) for name in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert sorted(lines[0].removeprefix("# ").split("; ")) == ["grow a", "grow b"]
    assert lines[1] == "name,i,pad" and lines.count("name,i,pad") == 1
    rows = read_csv(path)
    for name in "ab":
        assert [int(r["i"]) for r in rows if r["name"] == name] == list(range(300))
    assert all(r["pad"] == "x" * 200 for r in rows)
    mine = RowFile(path, ["name", "i", "pad"], "grow a")
    mine.add([{"name": "c", "i": 0, "pad": ""}])
    assert len(RowFile(path, ["name", "i", "pad"], "grow b").current()) == 601 == len(mine.current())
