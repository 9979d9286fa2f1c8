"""The package's layout rules, read from the code's own imports (`ast`, nothing is run).

- One folder per op under ``entropic/ops/``, each with its Triton kernel (``triton.py``), its PyTorch
  backend (``torch.py``), its float64 reference (``reference.py``) and its dispatch (``dispatch.py``: can
  the kernel run, and why not). Softmax attention is α-entmax attention at α = 1: its dispatch and
  PyTorch path are ``entmax_attention``'s (one rule for both attention kernels).
- Dependencies point one way: an op imports only other ops, ``entropic.types`` and the shared argument
  checks (``entropic._validation``, ``entropic._ranges``), never the domain (attention, sampling, metrics,
  models, …).
- Nobody outside an op's folder imports its private names (a module or a name starting with ``_``); the
  shared private pieces at ``entropic/ops/_*.py`` are for the ops alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "entropic" / "ops"
OP_FOLDERS = sorted(p for p in OPS.iterdir() if p.is_dir() and (p / "__init__.py").exists())
CODE = [
    p
    for folder in ("entropic", "experiments", "benchmarks", "paper")
    for p in sorted((ROOT / folder).rglob("*.py"))
    if ".venv" not in p.parts
]
# What an op may import from entropic: other ops, the shared types and the shared argument checks.
OP_MAY_IMPORT = ("entropic.ops", "entropic.types", "entropic._validation", "entropic._ranges")


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """``(module, name)`` of every ``from module import name`` and ``(module, None)`` of ``import module``
    in `path` (function-level imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
    return found


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def test_every_op_folder_has_its_kernel_reference_and_dispatch():
    assert {p.name for p in OP_FOLDERS} == {"entropy", "flash_attention", "entmax_attention", "sampling"}
    for folder in OP_FOLDERS:
        shared = folder.name == "flash_attention"  # its dispatch and PyTorch path are entmax_attention's
        needed = ("triton.py", "reference.py") + (() if shared else ("dispatch.py", "torch.py"))
        missing = [f for f in needed if not (folder / f).is_file()]
        assert not missing, f"{folder.relative_to(ROOT)} lacks {missing}"


@pytest.mark.parametrize("path", sorted(OPS.rglob("*.py")), ids=lambda p: str(p.relative_to(OPS)))
def test_ops_never_import_the_domain(path):
    domain = [
        module
        for module, _ in _imports(path)
        if module.split(".")[0] == "entropic" and not module.startswith(OP_MAY_IMPORT)
    ]
    assert not domain, f"{_module_of(path)} imports {domain}: ops may only import {OP_MAY_IMPORT}"


@pytest.mark.parametrize("path", CODE, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_of_an_op_is_imported_from_outside_it(path):
    importer = _module_of(path)
    bad = []
    for module, name in _imports(path):
        if not module.startswith("entropic.ops"):
            continue
        parts = module.split(".")  # entropic, ops, <op or _shared>, <module>...
        owner = ".".join(parts[:3])  # the op folder (or the shared private module) the import reaches
        private = any(part.startswith("_") for part in parts[2:]) or (name or "").startswith("_")
        shared = len(parts) > 2 and parts[2].startswith("_")
        inside = importer.startswith(owner + ".") or importer == owner
        if private and not inside and not (shared and importer.startswith("entropic.ops.")):
            bad.append(f"{module}.{name}" if name else module)
    assert not bad, f"{importer} imports private names of an op: {bad}"
