"""Compile what the kernel launchers launch for Hopper (sm_90), without a GPU, and report resources.

`compile_launches(fn)` runs ``fn`` (a module-level function of a test file that calls host launchers on CPU
tensors) in a fresh process without the interpreter. There every ``kernel[grid](...)`` is compiled to
machine code for sm_90 with Triton's bundled toolchain instead of run, with the specialisation a real
launch would get (integer arguments equal to 1 become constants, 16-byte alignment and divisibility),
and ``ptxas -v``'s resource report is read back: shared memory, registers and spilled bytes per thread.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

# The opt-in shared memory a block may use on H100 / H200 (227 KB).
HOPPER_SMEM_PER_BLOCK = 232448
_NO_PTXAS = 77  # exit code of the compiling process when this Triton has no ptxas


@dataclass(frozen=True)
class Compiled:
    """One distinct launch: the kernel, its constexprs (specialised integers included), options, resources."""

    kernel: str
    dtype: str  # element type of the first pointer argument (the input), e.g. "bf16"
    constexprs: dict
    num_warps: int
    num_stages: int
    shared: int | None = None  # bytes of shared memory per block
    registers: int | None = None  # per thread
    spill_stores: int | None = None  # bytes per thread
    spill_loads: int | None = None
    error: str | None = None

    def __str__(self) -> str:
        consts = ", ".join(f"{k}={v}" for k, v in self.constexprs.items())
        options = f"num_warps={self.num_warps}, num_stages={self.num_stages}"
        where = f"{self.kernel}({self.dtype}; {consts}; {options})"
        if self.error:
            return f"{where}: {self.error}"
        return f"{where}: {self.shared} B shared, {self.registers} registers, {self.spill_stores} B spilled"


def compile_launches(fn: Callable[[], None]) -> list[Compiled]:
    """The distinct launches made by ``fn()``, each compiled for sm_90; skips when Triton has no ptxas."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    # the checkout under test first, as pytest's `pythonpath` puts it (not an installed copy of the package)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run(
        [sys.executable, __file__, inspect.getsourcefile(fn), fn.__name__],
        env=env,
        capture_output=True,
        text=True,
    )
    if run.returncode == _NO_PTXAS:
        pytest.skip("this Triton build has no ptxas")
    assert run.returncode == 0, run.stderr[-4000:]
    return [Compiled(**r) for r in json.loads(run.stdout.splitlines()[-1])]


def problems(reports: list[Compiled], float32_spill: int = 0) -> list[str]:
    """The launches that fail to compile, need more shared memory than a Hopper block may have, or spill
    registers: none may, but launches on float32 inputs up to ``float32_spill`` bytes per thread."""

    def allowed(r: Compiled) -> int:
        return float32_spill if r.dtype == "fp32" else 0

    return [
        str(r) for r in reports if r.error or r.shared > HOPPER_SMEM_PER_BLOCK or r.spill_stores > allowed(r)
    ]


def _resources(log: str) -> dict:
    def grab(pattern: str) -> int | None:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else None

    return {
        "registers": grab(r"Used (\d+) registers"),
        "spill_stores": grab(r"(\d+) bytes spill stores"),
        "spill_loads": grab(r"(\d+) bytes spill loads"),
    }


def _main(path: str, name: str) -> None:
    import importlib.util
    import tempfile

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    target = GPUTarget("cuda", 90, 32)
    ptxas = get_ptxas(target.arch).path
    if not os.path.exists(ptxas):
        sys.exit(_NO_PTXAS)
    backend = make_backend(target)
    knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas -v's report when it assembles
    seen, reports = set(), []

    def compile_instead(self, *args, grid, warmup, **kwargs):
        # what JITFunction.run does up to the compile, for the sm_90 backend instead of the active driver's
        binder = create_function_from_signature(self.signature, self.params, backend)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = self._pack_args(
            backend, kwargs, bound, specialization, options
        )
        key = repr((self.__name__, signature, constexprs, attrs, options))
        if key in seen:
            return None
        seen.add(key)
        names = [p.name for p in self.params]
        report = {
            "kernel": self.__name__,
            "dtype": next(t for t in signature.values() if t.startswith("*")).removeprefix("*"),
            "constexprs": {names[path[0]]: value for path, value in constexprs.items()},
            "num_warps": options.num_warps,
            "num_stages": options.num_stages,
        }
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                compiled = triton.compile(
                    ASTSource(self, signature, constexprs, attrs), target=target, options=options.__dict__
                )
        except Exception as error:
            reports.append({**report, "error": f"{type(error).__name__}: {str(error)[-1500:]}"})
            return None
        text = log.getvalue()
        if "Used" not in text:  # from Triton's cache: assemble the PTX again for the report
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "kernel.ptx")
                with open(src, "w") as f:
                    f.write(compiled.asm["ptx"])
                cmd = [ptxas, "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a", src, "-o", src + ".o"]
                text = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
        reports.append({**report, "shared": compiled.metadata.shared, **_resources(text)})
        return None

    JITFunction.run = compile_instead
    from entropic.ops import dispatch as _utils

    # CPU tensors stand in for CUDA ones: the launchers' device check is the only thing that objects
    check_device = _utils.check_device
    for module in list(sys.modules.values()):
        if getattr(module, "check_device", None) is check_device:
            module.check_device = lambda x, op: None
    spec = importlib.util.spec_from_file_location("_launches", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    getattr(module, name)()
    print(json.dumps(reports))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
