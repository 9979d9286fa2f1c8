"""Every Python example in README.md runs (the CUDA ones only where a GPU is present).

Each block runs on its own, so every example is self-contained; shell blocks are not run here (the CLI has
its own tests).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    code = BLOCKS[index]
    if "cuda" in code and not torch.cuda.is_available():
        pytest.skip("example needs a CUDA device")
    namespace: dict = {}
    exec(compile("import torch\nimport entropic as en\n" + code, f"README.md[{index}]", "exec"), namespace)
