"""The op vocabulary: one source of truth for op names and their integer labels.

Every cell stores its ops as names; native code and the canonical codes use the integer
*label* of each op. Labels 1..7 are fixed for the built-in ops (NB101 and NB201 node ops) so
that codes are stable across processes and machines. Users may register more ops
(``register_op``); those get labels 8..31 in registration order, so codes of cells that use
them are stable only if the ops are registered in the same order (store your vocabulary with
your data).

``input`` and ``output`` are not ops: they are the fixed first and last vertex of every cell
and never appear in a code (their positions are fixed).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..reference.dag import LABEL_BITS

INPUT = "input"
OUTPUT = "output"

#: NAS-Bench-101 ops, in NB101's canonical order (the order its hash uses for labels 0, 1, 2).
NB101_OPS: tuple[str, ...] = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")
#: NAS-Bench-201 edge ops, in NB201's order. ``none`` is an edge op only: it never becomes a node.
NB201_EDGE_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: NAS-Bench-201 ops as nodes of the node form (every edge op but ``none``).
NB201_NODE_OPS: tuple[str, ...] = NB201_EDGE_OPS[1:]

#: Labels are 1..MAX_LABEL (they fill LABEL_BITS bits of a canonical code).
MAX_LABEL = (1 << LABEL_BITS) - 1


@dataclass(frozen=True)
class OpInfo:
    name: str
    label: int  # 1..31, stable for built-ins
    identity: bool  # the op returns its input unchanged (folded away by network codes)


_BUILTIN: tuple[OpInfo, ...] = (
    OpInfo("conv3x3-bn-relu", 1, False),
    OpInfo("conv1x1-bn-relu", 2, False),
    OpInfo("maxpool3x3", 3, False),
    OpInfo("skip_connect", 4, True),
    OpInfo("nor_conv_1x1", 5, False),
    OpInfo("nor_conv_3x3", 6, False),
    OpInfo("avg_pool_3x3", 7, False),
)

_BY_NAME: dict[str, OpInfo] = {op.name: op for op in _BUILTIN}
_BY_LABEL: dict[int, OpInfo] = {op.label: op for op in _BUILTIN}


def register_op(name: str, *, identity: bool = False) -> OpInfo:
    """Add an op name to the vocabulary (idempotent for the same name and flags)."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name) or name in (INPUT, OUTPUT):
        raise ValueError(f"op name must be a non-empty string without spaces, not 'input'/'output'; got {name!r}")
    if name in _BY_NAME:
        op = _BY_NAME[name]
        if op.identity != identity:
            raise ValueError(f"op {name!r} is already registered with identity={op.identity}")
        return op
    label = max(_BY_LABEL) + 1
    if label > MAX_LABEL:
        raise ValueError(f"the op vocabulary is full ({MAX_LABEL} ops); cannot register {name!r}")
    op = OpInfo(name, label, identity)
    _BY_NAME[name] = op
    _BY_LABEL[label] = op
    return op


def op_info(name: str) -> OpInfo:
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown op {name!r}; known ops: {', '.join(sorted(_BY_NAME))} "
            "(register new ones with cgnf_fast.space.register_op)"
        ) from None


def op_label(name: str) -> int:
    return op_info(name).label


def op_name(label: int) -> str:
    try:
        return _BY_LABEL[int(label)].name
    except KeyError:
        raise ValueError(f"unknown op label {label}; known labels: {sorted(_BY_LABEL)}") from None


def identity_labels() -> list[int]:
    """Labels of the identity ops (folded away by network codes)."""
    return [op.label for op in _BY_LABEL.values() if op.identity]


def known_ops() -> tuple[str, ...]:
    return tuple(_BY_NAME)
