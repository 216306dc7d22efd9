"""torch.library custom ops around the native core (validation, fake and autograd rules)."""

from __future__ import annotations

from .cnf import CnfPlan, cnf_dynamics
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
    "cnf_dynamics",
    "dag_canonical_code",
    "dag_nb101_digest",
    "dag_nb101_hash",
    "dag_network_code",
    "dag_prune",
    "dag_valid",
    "gin_aggregate",
]
