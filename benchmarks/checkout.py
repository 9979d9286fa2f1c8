"""Import entropic from this checkout without installing it (a machine whose Python may not be changed).

`install` puts the checkout on ``sys.path`` when ``entropic`` (with its kernels, ``entropic/kernels/``) is
not importable already, and does nothing where it is (an editable or regular install).

Run a script or module with it: ``python benchmarks/checkout.py -m pytest -m gpu`` or
``python benchmarks/checkout.py benchmarks/bench_entropy.py --quick``.
"""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _installed() -> bool:
    """Whether entropic and entropic.kernels import without this checkout on the path."""
    try:
        return importlib.util.find_spec("entropic.kernels") is not None
    except ModuleNotFoundError:
        return False


def install() -> bool:
    """Make ``import entropic`` load this checkout; True if the checkout had to be put on the path."""
    if _installed():
        return False
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return True


def main(argv: list[str]) -> None:
    """``-m module args...`` or ``script.py args...``, run as ``__main__`` with the hook installed."""
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        raise SystemExit("usage: python benchmarks/checkout.py (-m module | script.py) [args...]")
    install()
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))  # as `python script.py` would
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
