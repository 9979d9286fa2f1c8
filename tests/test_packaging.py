"""The kernels install as `entropic.kernels`: nothing of entropic is a top-level `kernels` module.

A PyPI package `kernels` exists and transformers imports it; a `kernels` folder at the repository root
would shadow it for every command run from there (and break transformers' import).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, entropic, entropic.kernels, entropic.ops.entropy.triton;"
    "print(entropic.__file__); print(entropic.kernels.__file__);"
    "spec = importlib.util.find_spec('kernels'); print(spec and spec.origin)"
)


def probe(cwd: Path, env_path: str | None = None) -> list[str]:
    env = {"PYTHONPATH": env_path} if env_path else {}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def _not_ours(top_level: str) -> bool:
    """A top-level `kernels` module, if any, is an installed package (the PyPI one), not entropic's files."""
    return top_level == "None" or "site-packages" in Path(top_level).parts


def test_installed_environment_imports_entropic_kernels(tmp_path):
    """In the test environment (an editable install), entropic.kernels resolves to entropic/kernels/."""
    entropic_file, kernels_file, top_level = probe(tmp_path)
    assert Path(kernels_file).parent == Path(entropic_file).parent / "kernels"
    assert _not_ours(top_level)


def test_the_repository_root_does_not_shadow_a_kernels_package():
    """Run from the repository root (as `make` does), `import kernels` must not find entropic's folder."""
    _, _, top_level = probe(ROOT)
    assert _not_ours(top_level)
    assert not (ROOT / "kernels").exists()


def test_wheel_layout_and_normal_install(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("entropic-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "entropic/kernels/__init__.py" in names
    assert "entropic/ops/entropy/triton.py" in names
    assert not any(n.startswith("kernels/") for n in names)
    for init in sorted((ROOT / "entropic").rglob("__init__.py")):  # every subpackage is listed in pyproject
        assert init.relative_to(ROOT).as_posix() in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    entropic_file, kernels_file, top_level = probe(tmp_path, env_path=str(target))
    assert Path(entropic_file).is_relative_to(target)
    assert Path(kernels_file).is_relative_to(target)
    assert _not_ours(top_level)


def test_the_oldest_triton_leg_runs_every_kernel_test_file():
    """`make test` runs the kernel tests again under the oldest supported Triton: a new kernel test file
    (or a test file that calls a kernel) must be in the Makefile's KERNEL_TESTS."""
    makefile = (ROOT / "Makefile").read_text()
    listed = makefile.split("KERNEL_TESTS :=", 1)[1].split("\n\n", 1)[0].split("#", 1)[0]
    listed_files = {part for part in listed.replace("\\", " ").split() if part.startswith("tests/")}
    assert all((ROOT / name).is_file() for name in listed_files)
    calls_kernels = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if path.name.startswith("test_kernel_")
        or (path.name != "test_packaging.py" and 'impl="triton"' in path.read_text())
    }
    assert calls_kernels <= listed_files, calls_kernels - listed_files
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "$(OLDEST_VENV)/.stamp" in test_recipe and "$(KERNEL_TESTS)" in test_recipe
