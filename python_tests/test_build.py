"""The native module: build configuration, CUDA flags, import order."""

from __future__ import annotations

import pytest
import torch

import cgnf_fast
from cgnf_fast import _C


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
