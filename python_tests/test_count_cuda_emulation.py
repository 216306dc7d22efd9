"""The GPU space count without a GPU: csrc/dag/count_cuda.cu's kernels and launchers compiled as
host C++ (block = 128 OS threads, __syncthreads = a barrier) and driven by the real
cgnf_fast/space/_count_cuda.py, against the CPU path (scripts/emulate_count_cuda.py says what
this does and does not check). Small grids (2-5 blocks) run the grid-stride loops, and every
mask must be visited exactly once; a key buffer of 4 rows makes the glue grow it and rerun
units. Spaces with an identity op (network keys) and an edge limit. Skipped without a g++
that builds C++20 (std::atomic_ref). About 4 s on two cores, the build included."""

from __future__ import annotations

import pytest
import torch
from helpers import load_script

from cgnf_fast.space import DesignSpace


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    mod = load_script("emulate_count_cuda")
    if mod is None:
        pytest.skip("scripts/emulate_count_cuda.py is not in this checkout")
    try:
        lib = mod.build(tmp_path_factory.mktemp("count_cuda_emu"))
    except mod.CompilerUnavailable as e:
        pytest.skip(f"cannot compile the emulation: {e}")
    return mod, lib


THREE = ("skip_connect", "nor_conv_3x3", "avg_pool_3x3")  # skip_connect: identity (network keys)


@pytest.mark.parametrize(
    "space, grid",
    [
        (DesignSpace(("skip_connect", "nor_conv_1x1"), max_nodes=6, max_edges=7, name="s6e7"), 2),
        (DesignSpace(THREE, max_nodes=6, max_edges=5, name="s6e5"), 5),
        (DesignSpace(THREE, max_nodes=5, max_edges=5, name="s5e5"), 3),
    ],
    ids=lambda x: getattr(x, "name", f"grid{x}"),
)
def test_emulated_gpu_count_equals_cpu(emu, space, grid):
    mod, lib = emu
    r = mod.check_space(lib, space, grid=grid, capacity=4)
    assert r["ok"], mod.format_result(r, grid, 4)
    assert r["strided"] > 0, "no launch was given fewer blocks than it asked for (grid-stride loops not run)"
    assert r["key_reruns"] > 0, "the key buffer never overflowed (regrow path not run)"


def test_emulated_launcher_errors(emu):
    mod, lib = emu
    out = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="vertex count"):
        lib.call("count_valid_cuda", 9, -1, 0, 1, out.data_ptr(), mod.FAKE_STREAM)
    with pytest.raises(ValueError, match="mask range"):
        lib.call("count_unique_cuda", 3, 2, -1, 0, 9, out.data_ptr(), mod.FAKE_STREAM)
    with pytest.raises(mod.EmulationError, match="stream"):
        lib.call("count_valid_cuda", 3, -1, 0, 8, out.data_ptr(), 0)
