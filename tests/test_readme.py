"""Every Python example in README.md runs on its own, and the outputs it shows are the real ones.

Each block runs in a fresh namespace with nothing imported for it, so every example carries its own imports
(a block whose first line is ``# needs a CUDA device`` runs only where a GPU is present; one whose first
line is ``# needs vLLM`` or ``# needs a vLLM server`` runs in the vLLM leg,
`tests/test_integrations_vllm.py`). A one-line expression whose trailing comment contains ``-> text`` shows
its output: ``repr`` of the value must equal ``text`` (``x.shape  # -> torch.Size([4])``).
Shell blocks are not run here (the CLI has its own tests).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
ARROW = "-> "
CUDA_MARK = "# needs a CUDA device"
VLLM_MARKS = ("# needs vLLM", "# needs a vLLM server")  # run by tests/test_integrations_vllm.py


def _shown_outputs(code: str) -> dict[int, str]:
    """Line number -> the output text that the line's ``# ... -> text`` comment shows."""
    shown = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT and ARROW in tok.string:
            shown[tok.start[0]] = tok.string.rsplit(ARROW, 1)[1].strip()
    return shown


def _with_checks(code: str, name: str) -> ast.Module:
    """The block's AST with each shown-output expression replaced by ``__expect__(value, text, line)``."""
    tree = ast.parse(code, name)
    shown = _shown_outputs(code)
    checked = set()
    for i, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and node.lineno == node.end_lineno and node.lineno in shown:
            call = ast.Call(
                func=ast.Name("__expect__", ast.Load()),
                args=[node.value, ast.Constant(shown[node.lineno]), ast.Constant(node.lineno)],
                keywords=[],
            )
            tree.body[i] = ast.copy_location(ast.Expr(call), node)
            checked.add(node.lineno)
    stray = sorted(set(shown) - checked)
    assert not stray, (
        f"{name}: '# ... {ARROW}' marks a shown output on lines {stray}, which are not one-line expressions"
    )
    return ast.fix_missing_locations(tree)


def _expect(value, text: str, line: int) -> None:
    assert repr(value) == text, f"line {line}: the README shows {text}, the code gives {value!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
    code = BLOCKS[index]
    if code.startswith(CUDA_MARK) and not torch.cuda.is_available():
        pytest.skip("example needs a CUDA device")
    if code.startswith(VLLM_MARKS):
        pytest.skip("example needs vLLM: tests/test_integrations_vllm.py runs it in its environment")
    name = f"README.md[{index}]"
    namespace: dict = {"__expect__": _expect, "__name__": name}
    exec(compile(_with_checks(code, name), name, "exec"), namespace)


def test_cuda_examples_say_so():
    """A block that uses CUDA starts with the marker the README explains (and the test skips on a CPU);
    every other block runs here."""
    for index, code in enumerate(BLOCKS):
        uses_cuda = "cuda" in code.replace(CUDA_MARK, "")
        assert uses_cuda == code.startswith(CUDA_MARK), f"README.md[{index}]: mark CUDA blocks, and only them"


def test_shown_outputs_are_checked():
    """The check is live: a wrong shown output fails, a right one passes, a misplaced arrow is reported."""
    ok = "x = 1 + 1\nx  # two -> 2\n"
    exec(compile(_with_checks(ok, "ok"), "ok", "exec"), {"__expect__": _expect})
    wrong = "x = 1 + 1\nx  # -> 3\n"
    with pytest.raises(AssertionError, match="shows 3, the code gives 2"):
        exec(compile(_with_checks(wrong, "wrong"), "wrong", "exec"), {"__expect__": _expect})
    with pytest.raises(AssertionError, match="not one-line expressions"):
        _with_checks("x = 2  # -> 2\n", "misplaced")
    assert sum(len(_shown_outputs(block)) for block in BLOCKS) >= 15


def _section(heading: str) -> str:
    """The README's text from `heading` to the next heading."""
    text = README.read_text()
    start = text.index(heading)
    return text[start : text.index("\n#", start + len(heading))]


def test_the_samplers_table_lists_every_registered_sampler():
    """One row per registered sampler, in the registry's order, each with a `build_sampler` example that
    builds it."""
    from entropic.sampling import SAMPLERS, Sampler, build_sampler

    section = _section("### Samplers — every registered name")
    rows = re.findall(r"^\| `(\w+)` \|.*\| `(build_sampler\(.*\))` \|$", section, re.M)
    assert [name for name, _ in rows] == list(SAMPLERS)
    for name, example in rows:
        assert example.startswith(f'build_sampler("{name}"'), example
        assert isinstance(eval(example, {"build_sampler": build_sampler}), Sampler), example
