"""The native module: build configuration, CUDA flags, import order."""

from __future__ import annotations

import pytest
import torch

import cgnf_fast
from cgnf_fast import BUILT_WITH_CUDA, _C


def test_build_config_keys():
    cfg = _C.build_config()
    assert set(cfg) >= {"cuda", "cuda_version", "cuda_architectures", "max_nodes", "compiler", "build_type", "version"}
    assert cfg["max_nodes"] == 8
    assert cfg["version"] == cgnf_fast.__version__


def test_cuda_flags_consistent():
    assert cgnf_fast.BUILT_WITH_CUDA is bool(_C.build_config()["cuda"])
    if cgnf_fast.BUILT_WITH_CUDA:
        # Built against CUDA here (CI has nvcc): default architecture is 90 (sm_90 + PTX).
        assert "90" in _C.build_config()["cuda_architectures"]
    if not torch.cuda.is_available():
        assert cgnf_fast.cuda_available() is False
    assert _C.cuda_device_count() >= 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without a GPU")
def test_cuda_call_without_gpu_is_a_clear_error():
    from cgnf_fast._native import require_cuda

    with pytest.raises(RuntimeError, match="dag_prune"):
        require_cuda("dag_prune")


def test_public_surface():
    for name in cgnf_fast.__all__:
        assert hasattr(cgnf_fast, name)


def _stub() -> dict[str, list[str]]:
    """Names the ``_C.pyi`` stub declares -> their parameter names (classes: ``Class.method``)."""
    import ast
    from pathlib import Path

    tree = ast.parse((Path(cgnf_fast.__file__).parent / "_C.pyi").read_text())
    out: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.ClassDef):
            out[node.name] = []
            for f in node.body:
                if isinstance(f, ast.FunctionDef) and f.name != "__init__":
                    out[f"{node.name}.{f.name}"] = [a.arg for a in f.args.args][1:]
    return out


def _compiled() -> dict[str, list[str]]:
    """The same from the compiled module's pybind11 signatures (first docstring line)."""
    import re

    def params(doc: str) -> list[str]:
        head = doc.splitlines()[0]
        inner = head[head.index("(") + 1:head.rindex(")")]
        names = [m.group(1) for m in re.finditer(r"(?:^|, )(\w+)(?::|$|,)", inner)]
        return [n for n in names if n != "self"]

    out: dict[str, list[str]] = {}
    for name in dir(_C):
        if name.startswith("_"):
            continue
        obj = getattr(_C, name)
        if isinstance(obj, type):
            out[name] = []
            for m in dir(obj):
                if not m.startswith("_"):
                    out[f"{name}.{m}"] = params(getattr(obj, m).__doc__)
        else:
            out[name] = params(obj.__doc__)
    return out


def test_the_stub_matches_the_compiled_module():
    """``_C.pyi`` declares exactly what ``_C`` exports, with the same parameter names (the CUDA
    entry points only in a CUDA build)."""
    stub, real = _stub(), _compiled()
    expected = {k: v for k, v in stub.items() if BUILT_WITH_CUDA or not k.endswith("_cuda")}
    assert sorted(real) == sorted(expected), (sorted(set(real) - set(expected)), sorted(set(expected) - set(real)))
    for name, args in real.items():
        assert args == expected[name], (name, args, expected[name])
