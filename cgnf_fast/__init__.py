"""cgnf_fast: generate neural-network cells beyond a NAS search space.

The public surface is re-exported here; see the README for a tour.
"""

from __future__ import annotations

from ._native import BUILT_WITH_CUDA, _C, cuda_available
from .models import GraphVAE
from .sampling import SampledCell, sample
from .space import Cell, DesignSpace
from .space import get as get_space

__version__ = str(_C.build_config()["version"])

__all__ = ["BUILT_WITH_CUDA", "Cell", "DesignSpace", "GraphVAE", "SampledCell", "__version__", "cuda_available",
           "get_space", "sample", "search"]


def __getattr__(name: str):
    """``cgnf_fast.search`` (:func:`cgnf_fast.searching.search`), imported on first use: sampling
    alone loads nothing of the search."""
    if name == "search":
        from .searching import search

        return search
    raise AttributeError(f"module 'cgnf_fast' has no attribute {name!r}")
