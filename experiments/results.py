"""What the experiments write and print: result CSVs under results/ (the first line is the command that wrote
the file), progress bars that fit the terminal, and the one-line summary that ends every run."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# The label, the count, the bar, elapsed<remaining, then the metrics: at 80 columns the bar shrinks and the
# rest stays whole while label and metrics together keep under about 45 characters.
PROGRESS_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}"


def write_csv(
    path: Path,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    module: str | None = None,
    argv: Sequence[str] | None = None,
    *,
    command: str | None = None,
) -> None:
    """Write `rows` to `path` under a ``# python -m <module> <args>`` line that reproduces it.

    `args` are `argv` (``sys.argv[1:]`` when None). A `command` given instead is the line as it is, e.g.
    `RowFile.commands` (``<first>; <second>``); with neither `module` nor `command` the file is a plain CSV,
    without a ``#`` line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if command is None and module is not None:
        command = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    with path.open("w", newline="") as f:
        if command is not None:
            f.write(f"# {command}\n")
        writer = csv.DictWriter(f, list(columns))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a results CSV, its ``#`` command line skipped."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `folder` (``flock`` on the directory itself, so no lock file is
    left behind): processes that grow files in one folder take turns."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class RowFile:
    """A results CSV that grows as a run goes, so that a restarted run skips what is there.

    The file is ``# <command>``, the header of `columns`, then the rows; it is created by the first `add`.
    `rows` holds every row, those read at construction (through `parse`, strings when None) and those
    added since (as given). With `every_command`, a `command` the first line does not hold yet is added
    to it (``# <first>; <second>``): the commands there, run in that order on an empty file, write the
    same rows. Otherwise the first line is the command that created the file.

    Several processes may grow one file at once (each adding rows the others do not, say one variant
    each): reading, the first line and every `add` happen under a lock on the file's folder, and
    `current` reads the rows all of them have written so far.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        columns: Sequence[str],
        command: str,
        *,
        parse: Callable[[dict[str, str]], dict[str, Any]] | None = None,
        every_command: bool = False,
    ) -> None:
        self.path, self.columns, self.command = Path(path), list(columns), command
        self._parse = parse
        self._listed = not every_command  # is `command` on the first line (or need it not be)?
        with _locked(self.path.parent):
            self.rows: list[dict[str, Any]] = self._read()
            self._add_command()

    def _add_command(self) -> None:
        """With `every_command`, put `command` on the first line of an existing file that lacks it (under
        the lock): at construction, or at the first `add` after another process created the file. Commands
        are only ever added to that line, so once there it is not looked for again."""
        if self._listed or not self.path.exists():
            return
        first, _, rest = self.path.read_text().partition("\n")
        commands = first.removeprefix("# ").split("; ") if first.startswith("#") else []
        if self.command not in commands:
            body = rest if first.startswith("#") else first + "\n" + rest
            self.path.write_text("# " + "; ".join([*commands, self.command]) + "\n" + body)
        self._listed = True

    def _read(self) -> list[dict[str, Any]]:
        read = read_csv(self.path) if self.path.exists() else []
        return [self._parse(r) for r in read] if self._parse else list(read)

    def current(self) -> list[dict[str, Any]]:
        """Every row in the file now, this process's and any other's (parsed as `rows` are)."""
        with _locked(self.path.parent):
            return self._read()

    @property
    def commands(self) -> str:
        """The file's command line without ``# `` (this run's `command` while the file does not exist)."""
        if not self.path.exists():
            return self.command
        return self.path.read_text().partition("\n")[0].removeprefix("# ")

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Append `rows` (complete, in `columns`) and flush them, creating the file on the first call."""
        with _locked(self.path.parent):
            self._add_command()
            self._append(rows)
        self.rows.extend(dict(r) for r in rows)

    def _append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if f.tell() == 0:  # a new file
                f.write(f"# {self.command}\n")
                writer.writeheader()
                self._listed = True
            writer.writerows(rows)


def progress_bar(total: int, label: str, **options: Any) -> Any:
    """A tqdm bar ``<label> <n>/<total> |███   | 01:02<03:04, <metrics>`` as wide as the terminal.

    The width is ``$COLUMNS`` or the terminal's (80 when neither is known, as in a log file), one column
    spare; metrics go in with ``set_postfix_str``. `options` go to tqdm (``initial``, ``disable``, ...).
    """
    from tqdm.auto import tqdm

    columns = shutil.get_terminal_size().columns - 1
    return tqdm(total=total, desc=label, bar_format=PROGRESS_FORMAT, ncols=columns, **options)


def duration(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s`` or ``2 h 04 min``.

    >>> duration(8.24), duration(185), duration(7440)
    ('8.2 s', '3 min 05 s', '2 h 04 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def print_summary(task: str, text: str, *, started: float, out: str | os.PathLike | None = None) -> str:
    """Print and return a run's last line, ``<task> done in <duration>: <text>[; <out>]``: the path last.

    `started` is the run's ``time.perf_counter()`` at its start; `out` (a folder or file) is shown relative to
    the working directory when it lies below it.
    """
    line = f"{task} done in {duration(time.perf_counter() - started)}: {text}"
    if out is not None:
        path = Path(out)
        with contextlib.suppress(ValueError):  # not below the working directory
            path = path.resolve().relative_to(Path.cwd().resolve())
        line += f"; {path}"
    print(line, flush=True)
    return line
