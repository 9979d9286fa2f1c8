"""The distribution installs `kernels/` as `entropic.kernels`, never as a top-level `kernels` module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = (
    "import importlib.util, entropic, entropic.kernels, entropic.kernels.entropy;"
    "print(entropic.__file__); print(entropic.kernels.__file__);"
    "print(importlib.util.find_spec('kernels'))"
)


def probe(cwd: Path, env_path: str | None = None) -> list[str]:
    env = {"PYTHONPATH": env_path} if env_path else {}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def test_installed_environment_imports_entropic_kernels(tmp_path):
    """In the test environment (an editable install), entropic.kernels resolves to the kernels/ folder."""
    entropic_file, kernels_file, top_level = probe(tmp_path)
    assert Path(kernels_file).parent.name == "kernels"
    assert Path(entropic_file).parent.parent == Path(kernels_file).parent.parent
    assert top_level == "None"


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
    assert "entropic/kernels/entropy.py" in names
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
    assert top_level == "None"


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
