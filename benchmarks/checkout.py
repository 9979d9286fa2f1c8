"""Import entropic from this checkout without installing it (a machine whose Python may not be changed).

An installed entropic maps the top-level folder ``kernels/`` to ``entropic.kernels``; a bare checkout on
``sys.path`` would find ``entropic`` but not its kernels. `install` puts the checkout on ``sys.path`` and
adds an import hook that finds ``entropic.kernels`` in ``kernels/``, and does nothing where entropic is
already importable with its kernels (an editable or regular install).

Run a script or module with it: ``python benchmarks/checkout.py -m pytest -m gpu`` or
``python benchmarks/checkout.py benchmarks/bench_entropy.py --quick``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KERNELS = REPO / "kernels"


class _KernelsFinder(importlib.abc.MetaPathFinder):
    """Finds the package ``entropic.kernels`` in the checkout's ``kernels/`` (its submodules follow)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "entropic.kernels":
            return None
        return importlib.util.spec_from_file_location(
            fullname, KERNELS / "__init__.py", submodule_search_locations=[str(KERNELS)]
        )


def _installed() -> bool:
    """Whether entropic and entropic.kernels import as installed (without this hook)."""
    try:
        return importlib.util.find_spec("entropic.kernels") is not None
    except ModuleNotFoundError:
        return False


def install() -> bool:
    """Make ``import entropic`` and ``entropic.kernels`` load this checkout; True if a hook was needed."""
    if _installed():
        return False
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if not any(isinstance(finder, _KernelsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _KernelsFinder())
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
