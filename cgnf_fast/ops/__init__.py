"""torch.library custom ops around the native core (validation, fake and autograd rules)."""

from __future__ import annotations

from .cnf import CnfPlan, cnf_dynamics, cnf_dynamics_vjp
from .cnf_adjoint import NativeAdjoint
from .dag import (
    dag_canonical_code,
    dag_nb101_digest,
    dag_nb101_hash,
    dag_network_code,
    dag_prune,
    dag_valid,
)
from .gnn import gin_aggregate

__all__ = [
    "CnfPlan",
    "NativeAdjoint",
    "cnf_dynamics",
    "cnf_dynamics_vjp",
    "dag_canonical_code",
    "dag_nb101_digest",
    "dag_nb101_hash",
    "dag_network_code",
    "dag_prune",
    "dag_valid",
    "gin_aggregate",
]
