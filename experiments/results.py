"""Result CSVs under results/: the first line is the command that wrote the file."""

from __future__ import annotations

import csv
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def write_csv(
    path: Path,
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str],
    module: str,
    argv: Sequence[str] | None,
) -> None:
    """Write `rows` to `path` under a ``# python -m <module> <args>`` line that reproduces it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    command = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    with path.open("w", newline="") as f:
        f.write(f"# {command}\n")
        writer = csv.DictWriter(f, list(columns))
        writer.writeheader()
        writer.writerows(rows)
