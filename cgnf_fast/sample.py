"""``sample()``: new cells around a reference, under target attributes, from a trained G-VAE +
conditional flow.

    import cgnf_fast
    cells = cgnf_fast.sample("best", {"synflow": "+10%", "params": "<=0.8M"}, n=20, model="runs/nb201")
    for c in cells:
        print(c.params, c.predicted, c.nb201)

Model directory (``model=DIR``, CLI ``--model DIR``)::

    DIR/gvae/   a G-VAE run: gvae.safetensors + gvae.json   (cgnf train gvae --out DIR/gvae ...)
    DIR/flow/   a flow run on that G-VAE: flow.safetensors + flow.json
                                                             (cgnf train flow --gvae DIR/gvae --out DIR/flow)

The flow must have been trained on exactly that G-VAE (checked: sha256 of its weights). With
``model=None`` the pretrained default for the space is used: ``cgnf_fast/pretrained/<space>/``
in the same layout (:func:`default_model_dir`; ``cgnf pipeline`` makes one in ``RUN/model``).
For a space without one, ``model=None`` raises :class:`NoDefaultModelError` saying how to
train one.

Mechanism, per call:

1. *Reference*: a :class:`~cgnf_fast.space.Cell`, an NB201 string, an NB101 ``(matrix, ops)``
   pair or ``"best"`` (:data:`BEST_NB201` for NB201-family spaces, :data:`BEST_NB101` for
   NB101-family ones); it must be a member of the space (pruned, not the zero cell).
2. *Condition*: the reference's predicted attributes (G-VAE predictor on its encoding),
   overridden per attribute by ``condition`` (:func:`parse_condition`): an absolute value, a
   relative change of the reference's predicted value, or a bound. The values go through the
   flow's :class:`~cgnf_fast.train.flow.FlowConditions` (log for params/FLOPs,
   standardisation) to the condition vector ``c``. Attributes the condition leaves out do not
   stay frozen at the reference's values: they move with the specified ones as they co-vary
   over the flow's training cells (the Gaussian conditional mean,
   :meth:`~cgnf_fast.train.flow.FlowConditions.follow`). Asking for more params with the FLOPs
   pinned at the reference's would ask the flow for cells that do not exist (in NB201-like
   cells the two correlate at 0.998); name an attribute to pin it.
3. *Draw*: in chunks of ``chunk`` latents: noise ``e ~ N(0, temperature^2 I)`` from a CPU
   ``torch.Generator`` seeded with ``seed``, ``z = flow.sample(c, noise=e)``, the G-VAE
   decoder's logits of ``z``.
4. *Decode and repair* (:func:`decode_logits`): the most likely layout (argmax op per slot,
   edges with logit > 0), pruned. When that layout is invalid it is repaired, minimally in
   likelihood terms:

   - *no input -> output path* (the zero cell): add the single input -> output path that
     costs the least log-likelihood: a longest-path dynamic programme over the slots in order,
     where an edge already on costs 0 and an edge off costs its logit (``log p - log(1-p)``,
     <= 0), and a slot on the path that the decoder left absent costs
     ``max_op log p(op) - log p(absent)`` and takes that op. The result is the most likely
     layout among "the greedy layout plus one path";
   - *too many edges* (NB101's limit of 9): remove live edges in increasing order of logit,
     skipping any whose removal would cut the last input -> output path, until within the
     limit.

   A layout still outside the space after repair (only possible for spaces with extra rules,
   such as ``nb201`` itself) is dropped and counted as invalid.
5. *Filter*: dedupe by :meth:`~cgnf_fast.space.Cell.network_code` (two cells that build the
   same network are one architecture), drop seed-space cells with ``novel_only``, drop cells
   whose *exact* params/FLOPs (:mod:`cgnf_fast.nets`, the space's macro skeleton) violate a
   params/FLOPs bound. Bounds on other attributes only set the target (the reference's value
   clipped to the bound).
6. Repeat 3-5 until ``ceil(oversample * n)`` candidates are kept, ``max_draws`` latents were
   drawn, or (with ``n`` candidates already) the last ``max(chunk, 256)`` draws added none;
   fewer than ``n`` by then:
   :class:`SamplingError` with the counts of what was dropped and why.
7. *Select*: the ``n`` candidates whose attributes are closest to the condition vector are
   returned, closest first: squared distance in the flow's standardised units over every
   conditioned attribute, with the G-VAE predictor's values (exact params/FLOPs in NB201's
   skeleton, where they are closed forms); a bounded attribute only counts where it violates
   the bound. The flow proposes where in the latent space to look; the selection picks among
   the proposals. ``oversample=1`` returns the
   first ``n`` candidates in the order drawn (then a smaller ``n`` gives a prefix).

The G-VAE predictor gives each kept cell its ``predicted`` attributes (store units: ZC proxies
as stored, params and FLOPs in millions; the ``"graph"`` predictor reads the cell's own graph,
older ones its re-encoded latent); ``params``/``flops`` are exact
counts. Results are deterministic for a seed (same arguments, same model, same device).

Units in conditions: ZC proxies in the score store's units (synflow is a log there); params
and FLOPs in millions, or with a suffix ``K``/``M``/``G`` (``800K`` = ``0.8M`` = ``0.8``).
Relative changes move away from the reference's predicted value by ``|value| * pct``, so
``+10%`` always asks for more, also for a negative score.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .ops import (batch_from_cells, cell_canonical_codes, cell_network_codes, dag_canonical_code, dag_nb101_hash,
                  dag_network_code, dag_prune)
from ._native import check_device
from .ops.dag import MAX_NODES
from .space import NB101_OPS, NB201_NODE_OPS, Cell, DesignSpace, _ops
from .space import get as get_space

if TYPE_CHECKING:
    from .models.api import GraphVAE
    from .models.codec import CellCodec
    from .models.flow import ConditionalCNF
    from .train.flow import FlowConditions

__all__ = [
    "BEST_NB101",
    "BEST_NB101_HASH",
    "BEST_NB201",
    "BEST_NB201_INDEX",
    "NoDefaultModelError",
    "SampledCell",
    "SamplingError",
    "SamplingModel",
    "Target",
    "decode_logits",
    "default_model_dir",
    "draw_cells",
    "draw_round",
    "layered_positions",
    "parse_condition",
    "parse_condition_args",
    "resolve_reference",
    "sample",
    "sample_with_info",
    "shipped_spaces",
    "short_op",
    "cell_text",
]

#: The NB201 cell with the highest CIFAR-10 test accuracy after 200 epochs (94.3733 %, mean over
#: seeds): official index 6111. Source: column ``cifar10_test_200ep`` of
#: BayesWatch/nas-without-training ``results/arch_score_acc.pd`` (shared data
#: ``nb201/naswot_arch_score_acc.csv``). Index 13714 ties it exactly (same accuracy, same
#: 1.073466 M params, another network); ties go to the lower index. (Index 9930, often quoted
#: as "the best", is third at 94.3633 %.) Pinned by ``test_best_references_match_the_data``.
BEST_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
BEST_NB201_INDEX = 6111
#: The best of the 30 complete NB101 records shared with the project (mean final test accuracy
#: over the 3 runs at 108 epochs: 92.97 %): NB101 hash ``ff9707907f5c17ef8f80cc68fff30f74``.
#: Source: automl/NASLib ``tests/assets/nb101_dummy.pkl`` (shared data
#: ``nb101/naslib_nb101_dummy_30.json``). Only 30 of NB101's 423,624 cells: "best" among what
#: ships, not NB101's best. Pinned by ``test_best_references_match_the_data``.
BEST_NB101: tuple[tuple[tuple[int, ...], ...], tuple[str, ...]] = (
    ((0, 1, 0, 1, 0, 1),
     (0, 0, 1, 0, 0, 0),
     (0, 0, 0, 1, 0, 0),
     (0, 0, 0, 0, 1, 0),
     (0, 0, 0, 0, 0, 1),
     (0, 0, 0, 0, 0, 0)),
    ("input", "conv1x1-bn-relu", "conv1x1-bn-relu", "maxpool3x3", "conv3x3-bn-relu", "output"),
)
BEST_NB101_HASH = "ff9707907f5c17ef8f80cc68fff30f74"

#: The seed space of each built-in space ("novel" = outside it).
SEED_SPACES = {"nb201": "nb201", "nb201-like": "nb201", "nb101": "nb101", "nb101-like": "nb101"}
#: Attributes that are counts (store units: millions) and accept K/M/G suffixes and bounds as filters.
COUNT_ATTRIBUTES = ("params", "flops")
_SUFFIX = {"K": 1e-3, "k": 1e-3, "M": 1.0, "G": 1e3}  # -> millions ("m" is refused: milli or mega?)
#: A bare params/FLOPs value at or above this (in millions) is taken for a raw count written without a suffix.
_MAX_BARE_MILLIONS = 1e5
DEFAULT_CHUNK = 256
#: Distinct valid candidates gathered per returned cell; the n closest to the target are kept.
DEFAULT_OVERSAMPLE = 5.0

_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RE_BOUND = re.compile(rf"^(<=|>=)\s*([+-]?{_NUM})\s*([A-Za-z]?)$")
_RE_RELATIVE = re.compile(rf"^([+-])\s*({_NUM})\s*%$")
_RE_ABSOLUTE = re.compile(rf"^([+-]?{_NUM})\s*([A-Za-z]?)$")


class NoDefaultModelError(ValueError):
    """``model=None`` and no pretrained model is installed for the space."""


class SamplingError(ValueError):
    """Fewer than ``n`` cells passed the filters within ``max_draws`` latents."""


# -- model ---------------------------------------------------------------------------------
def default_model_dir(space: str) -> Path | None:
    """The pretrained model directory shipped for ``space`` (``cgnf_fast/pretrained/<space>``
    holding ``gvae/`` and ``flow/``), or None when none is installed."""
    d = Path(__file__).resolve().parent / "pretrained" / space
    if (d / "gvae" / "gvae.json").is_file() and (d / "flow" / "flow.json").is_file():
        return d
    return None


def shipped_spaces() -> list[str]:
    """Spaces with a pretrained model installed in ``cgnf_fast/pretrained/``."""
    root = Path(__file__).resolve().parent / "pretrained"
    return sorted(d.name for d in root.iterdir() if default_model_dir(d.name) is not None) if root.is_dir() else []


def _train_hint(space: str) -> str:
    return (f"train one with `cgnf pipeline --space {space} --out RUN` and pass model='RUN/model' (CLI: --model "
            f"RUN/model), or step by step: cgnf zc score {space} --n 2000 --proxies synflow,params,flops "
            f"--store scores.sqlite; cgnf train gvae --space {space} --store scores.sqlite --out DIR/gvae; "
            f"cgnf train flow --gvae DIR/gvae --out DIR/flow; then model='DIR' (CLI: --model DIR)")


class SamplingModel:
    """A G-VAE and the conditional flow trained on it, loaded from a model directory (module doc)."""

    def __init__(self, vae: GraphVAE, flow: ConditionalCNF, conditions: FlowConditions, *,
                 directory: Path | None = None, info: dict[str, Any] | None = None) -> None:
        if flow.latent != vae.cfg.latent:
            raise ValueError(f"the flow's latent size {flow.latent} is not the G-VAE's {vae.cfg.latent}")
        missing = [a for a in conditions.names if a not in vae.attributes]
        if missing:
            raise ValueError(f"the flow is conditioned on {missing}, which the G-VAE does not predict "
                             f"(it predicts {vae.attributes})")
        self.vae = vae
        self.flow = flow
        self.conditions = conditions
        self.directory = directory
        self.info = info or {}

    @property
    def space(self) -> DesignSpace:
        return self.vae.space

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> SamplingModel:
        from .models.api import GraphVAE
        from .train.checkpoint import CheckpointError
        from .train.flow import FlowConditions, load_flow

        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such model directory (expected gvae/ and flow/ sub-directories: a G-VAE "
                                  f"run and a flow run trained on it)")
        for sub in ("gvae", "flow"):
            if not (d / sub).is_dir():
                raise CheckpointError(f"{d}: missing the {sub}/ sub-directory (a model directory holds gvae/, a "
                                      f"G-VAE run, and flow/, a flow run trained on it)")
        vae = GraphVAE.load(d / "gvae", device=device)
        flow, info = load_flow(d / "flow", device=device, gvae_dir=d / "gvae")
        fspace = info.get("gvae", {}).get("space")
        if fspace is not None and fspace != vae.cfg.space:
            raise CheckpointError(f"{d / 'flow'} was trained for space {fspace!r} but {d / 'gvae'} is a G-VAE of "
                                  f"space {vae.cfg.space!r}")
        return cls(vae, flow, FlowConditions.from_dict(info["conditions"]), directory=d, info=info)


def _resolve_model(model: str | os.PathLike | SamplingModel | None, space: DesignSpace,
                   device: str | torch.device) -> SamplingModel:
    if isinstance(model, SamplingModel):
        m = model
    elif model is None:
        d = default_model_dir(space.name)
        if d is None:
            shipped = ", ".join(shipped_spaces()) or "none"
            raise NoDefaultModelError(f"no pretrained model is installed for space {space.name!r} (this version of "
                                      f"cgnf_fast ships: {shipped}); {_train_hint(space.name)}")
        m = SamplingModel.load(d, device=device)
    elif isinstance(model, (str, os.PathLike)):
        m = SamplingModel.load(model, device=device)
    else:
        raise ValueError(f"model must be a model directory (str or path), a SamplingModel or None, got "
                         f"{type(model).__name__}")
    ms = m.space
    if ms.name != space.name or (ms.ops, ms.max_nodes, ms.max_edges, ms.allow_zero) != (
            space.ops, space.max_nodes, space.max_edges, space.allow_zero):
        where = f" in {m.directory}" if m.directory is not None else ""
        raise ValueError(f"the model{where} was trained for space {ms.name!r}, not {space.name!r}; pass "
                         f"space={ms.name!r} or a model trained for {space.name!r}")
    return m


# -- reference -----------------------------------------------------------------------------
def resolve_reference(reference: Any, space: str | DesignSpace) -> Cell:
    """The pruned member cell that ``reference`` names (see :func:`sample`)."""
    from .space import nb201

    sp = get_space(space)
    if isinstance(reference, Cell):
        cell = reference
    elif isinstance(reference, str):
        text = reference.strip()
        if text == "best":
            seed = SEED_SPACES.get(sp.name)
            if seed == "nb201":
                cell = nb201.to_cell(BEST_NB201)
            elif seed == "nb101":
                cell = Cell.from_nb101(*BEST_NB101)
            else:
                raise ValueError(f"reference 'best' is defined for the NB201 and NB101 families "
                                 f"({', '.join(SEED_SPACES)}), not for space {sp.name!r}; pass a Cell")
        elif text.startswith("|"):
            try:
                cell = nb201.to_cell(text)
            except ValueError as e:
                raise ValueError(f"reference {reference!r} is not a valid NB201 string: {e}") from None
        else:
            raise ValueError(f"unknown reference string {reference!r}: give 'best', an NB201 string such as "
                             f"{BEST_NB201!r}, a Cell or an NB101 (matrix, ops) pair")
    elif isinstance(reference, (tuple, list)) and len(reference) == 2:
        matrix, ops = reference
        try:
            cell = Cell.from_nb101(matrix, ops)
        except (ValueError, TypeError) as e:
            raise ValueError(f"reference is not a valid NB101 (matrix, ops) pair: {e}") from None
    else:
        raise ValueError(f"reference must be a Cell, an NB201 string, an NB101 (matrix, ops) pair or 'best', got "
                         f"{type(reference).__name__}")
    try:
        p = sp.validate(cell)
    except ValueError as e:
        raise ValueError(f"the reference is not in space {sp.name!r}: {e}") from None
    if p.is_zero:
        raise ValueError("the reference is the zero cell (no input -> output path): there is nothing to sample "
                         "around")
    return p


# -- conditions ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One parsed condition entry.

    ``kind``: ``"absolute"`` (``value`` in store units), ``"relative"`` (``value`` the fraction:
    0.1 for ``+10%``), ``"at_most"`` / ``"at_least"`` (``value`` the bound in store units).
    ``filter_only``: a params/FLOPs bound the flow is not conditioned on (a filter, no target).
    """

    attribute: str
    kind: str
    value: float
    text: str
    filter_only: bool = False

    def target(self, reference_value: float) -> float:
        """The requested raw value given the reference's predicted value: for a bound, the
        reference's value clipped to it (a bound the reference meets does not move the target)."""
        if self.kind == "relative":
            return reference_value + abs(reference_value) * self.value
        if self.kind == "at_most":
            return min(reference_value, self.value)
        if self.kind == "at_least":
            return max(reference_value, self.value)
        return self.value

    def admits(self, value: float) -> bool:
        """Whether ``value`` (store units) satisfies a bound (always True for other kinds)."""
        if self.kind == "at_most":
            return value <= self.value
        if self.kind == "at_least":
            return value >= self.value
        return True

    def describe(self) -> str:
        ops = {"at_most": "<=", "at_least": ">="}
        if self.kind in ops:
            return f"{self.attribute}{ops[self.kind]}{self.value:g}"
        if self.kind == "relative":
            return f"{self.attribute}{self.value * 100:+g}%"
        return f"{self.attribute}={self.value:g}"


def _finite(name: str, text: str, x: float) -> float:
    if not math.isfinite(x):
        raise ValueError(f"condition {name!r}: value must be a finite number, got {text!r}")
    return x


def _with_unit(name: str, text: str, number: str, suffix: str) -> float:
    x = _finite(name, text, float(number))
    if suffix:
        if name not in COUNT_ATTRIBUTES:
            raise ValueError(f"condition {name!r}: the unit suffix {suffix!r} in {text!r} only applies to "
                             f"{' and '.join(COUNT_ATTRIBUTES)}; {name} is in the score store's units")
        if suffix not in _SUFFIX:
            raise ValueError(f"condition {name!r}: unknown unit suffix {suffix!r} in {text!r}; use K (thousands), "
                             f"M (millions) or G (billions)")
        return x * _SUFFIX[suffix]
    if name in COUNT_ATTRIBUTES and abs(x) >= _MAX_BARE_MILLIONS:
        raise ValueError(f"condition {name!r}: {text!r} would mean {x:g} million {name}; {name} is in millions "
                         f"(write e.g. 0.8, 0.8M or 800K)")
    return x


def _parse_entry(name: str, raw: Any) -> Target:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ValueError(f"condition {name!r}: expected a number or a string such as '+10%', '<=0.8M', got "
                         f"{type(raw).__name__} {raw!r}")
    if isinstance(raw, (int, float)):
        x = _finite(name, repr(raw), float(raw))
        if name in COUNT_ATTRIBUTES and abs(x) >= _MAX_BARE_MILLIONS:
            raise ValueError(f"condition {name!r}: {raw!r} would mean {x:g} million {name}; {name} is in millions "
                             f"(write e.g. 0.8, '0.8M' or '800K')")
        t = Target(name, "absolute", x, repr(raw))
    else:
        text = raw.strip()
        if text.lower().lstrip("+-<>= ") in ("nan", "inf", "infinity"):
            raise ValueError(f"condition {name!r}: value must be a finite number, got {raw!r}")
        if (m := _RE_BOUND.match(text)) is not None:
            v = _with_unit(name, text, m.group(2), m.group(3))
            t = Target(name, "at_most" if m.group(1) == "<=" else "at_least", v, text)
        elif (m := _RE_RELATIVE.match(text)) is not None:
            pct = _finite(name, text, float(m.group(2))) * (1 if m.group(1) == "+" else -1)
            t = Target(name, "relative", pct / 100.0, text)
        elif (m := _RE_ABSOLUTE.match(text)) is not None:
            t = Target(name, "absolute", _with_unit(name, text, m.group(1), m.group(2)), text)
        elif text.startswith(("<", ">")) and not text.startswith(("<=", ">=")):
            raise ValueError(f"condition {name!r}: cannot read {raw!r}; bounds are written '<=X' or '>=X'")
        elif text.endswith("%"):
            raise ValueError(f"condition {name!r}: cannot read {raw!r}; a relative change needs a sign and a "
                             f"number, e.g. '+10%' or '-5%'")
        else:
            raise ValueError(f"condition {name!r}: cannot read {raw!r}; expected a number (12.5), a relative "
                             f"change ('+10%', '-5%') or a bound ('<=0.8M', '>=1.2M')")
    if name in COUNT_ATTRIBUTES:
        if t.kind in ("absolute", "at_most") and t.value <= 0:
            raise ValueError(f"condition {name!r}: {t.text!r} is impossible ({name} is positive)")
        if t.kind == "relative" and t.value <= -1:
            raise ValueError(f"condition {name!r}: {t.text!r} is impossible ({name} is positive; a relative change "
                             f"must be above -100%)")
    return t


def parse_condition(condition: Mapping[str, Any] | None, attributes: Sequence[str]) -> dict[str, Target]:
    """Parses ``condition`` (attribute -> value) for a flow conditioned on ``attributes``.

    Values: a number (absolute, store units); ``"+10%"`` / ``"-5%"`` (relative to the
    reference's predicted value); ``"<=X"`` / ``">=X"`` (a bound: the target is the reference's value clipped to it, and
    for params/FLOPs a filter on the exact count). params/FLOPs are in millions and accept
    ``K``/``M``/``G`` suffixes. params/FLOPs bounds are accepted even when the flow is not
    conditioned on them (then they only filter). Raises ``ValueError`` naming the bad entry.
    """
    if condition is None:
        return {}
    if not isinstance(condition, Mapping):
        raise ValueError(f"condition must be a mapping attribute -> value (e.g. {{'synflow': '+10%'}}), got "
                         f"{type(condition).__name__}")
    out: dict[str, Target] = {}
    known = list(attributes)
    for name, raw in condition.items():
        if not isinstance(name, str):
            raise ValueError(f"condition keys must be attribute names (str), got {name!r}")
        conditioned = name in known
        if not conditioned and name not in COUNT_ATTRIBUTES:
            raise ValueError(f"condition {name!r}: unknown attribute; the model is conditioned on "
                             f"{', '.join(known)} (and params/flops bounds always filter)")
        t = _parse_entry(name, raw)
        if not conditioned:
            if t.kind not in ("at_most", "at_least"):
                raise ValueError(f"condition {name!r}: the model is not conditioned on {name} (only on "
                                 f"{', '.join(known)}), so only a bound ('<=X', '>=X') works, as a filter; got "
                                 f"{t.text!r}")
            t = Target(t.attribute, t.kind, t.value, t.text, filter_only=True)
        out[name] = t
    return out


def parse_condition_args(items: Sequence[str]) -> dict[str, str]:
    """``["synflow=+10%", "params=<=0.8M,flops=>=100M"]`` -> ``{"synflow": "+10%", ...}`` (CLI form:
    repeatable, comma-separated). Raises ``ValueError`` on an entry without ``=`` or a repeated name."""
    out: dict[str, str] = {}
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name, value = name.strip(), value.strip()
            if not sep or not name or not value:
                raise ValueError(f"condition {part!r}: expected ATTRIBUTE=VALUE, e.g. synflow=+10% or params=<=0.8M")
            if name in out:
                raise ValueError(f"condition {name!r} is given twice ({out[name]!r} and {value!r})")
            out[name] = value
    return out


# -- decoding + repair ---------------------------------------------------------------------
def _reach(adj: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots reachable from the input / reaching the output through present slots."""
    N = adj.shape[0]
    fwd = np.zeros(N, dtype=bool)
    bwd = np.zeros(N, dtype=bool)
    fwd[0] = True
    for j in range(1, N):
        fwd[j] = present[j] and bool((adj[:j, j] & fwd[:j]).any())
    bwd[N - 1] = True
    for i in range(N - 2, -1, -1):
        bwd[i] = present[i] and bool((adj[i, i + 1:] & bwd[i + 1:]).any())
    return fwd, bwd


def _repair_path(adj: np.ndarray, ops: np.ndarray, op_logp: np.ndarray, edge_logit: np.ndarray) -> None:
    """Adds the least costly input -> output path (module doc, step 4), in place."""
    N = adj.shape[0]
    node_gain = np.zeros(N)
    best_op = np.zeros(N, dtype=np.int64)
    for j in range(1, N - 1):
        if ops[j] == 0:
            k = int(op_logp[j - 1, 1:].argmax()) + 1
            best_op[j] = k
            node_gain[j] = op_logp[j - 1, k] - op_logp[j - 1, 0]
    best = np.full(N, -np.inf)
    prev = np.full(N, -1, dtype=np.int64)
    best[0] = 0.0
    for j in range(1, N):
        for i in range(j):
            if best[i] == -np.inf:
                continue
            g = best[i] + (0.0 if adj[i, j] else min(float(edge_logit[i, j]), 0.0)) + node_gain[j]
            if g > best[j]:
                best[j], prev[j] = g, i
    j = N - 1
    while j != 0:
        i = int(prev[j])
        adj[i, j] = True
        if 0 < j < N - 1 and ops[j] == 0:
            ops[j] = best_op[j]
        j = i


def _live_edges(adj: np.ndarray, present: np.ndarray) -> list[tuple[int, int]]:
    fwd, bwd = _reach(adj, present)
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(adj)) if fwd[i] and bwd[j]]


def _limit_edges(adj: np.ndarray, ops: np.ndarray, edge_logit: np.ndarray, max_edges: int) -> bool:
    """Removes live edges, least likely first, until at most ``max_edges`` remain (in place).

    A removal that costs only that edge is preferred; one that also prunes vertices away (their
    edges with them) is taken only when no such removal exists; a removal that would cut the last
    input -> output path never is. False when the limit cannot be met.
    """
    present = ops != 0
    live = _live_edges(adj, present)
    while len(live) > max_edges:
        order = sorted(live, key=lambda e: (edge_logit[e], e))
        fallback = None
        for e in order:
            adj[e] = False
            after = _live_edges(adj, present)
            adj[e] = True
            if len(after) == len(live) - 1:
                fallback = (e, after)
                break
            if fallback is None and after:
                fallback = (e, after)
        if fallback is None:
            return False
        adj[fallback[0]] = False
        live = fallback[1]
    return True


def _decode_one(codec: CellCodec, space: DesignSpace, op_logp: np.ndarray,
                edge_logit: np.ndarray) -> tuple[Cell | None, bool]:
    N = codec.num_nodes
    ops = np.zeros(N, dtype=np.int64)
    ops[0], ops[N - 1] = codec.input_index, codec.output_index
    ops[1:-1] = op_logp.argmax(-1)
    adj = edge_logit > 0
    cell = codec.decode_one(adj, ops)
    ok = not cell.is_zero and (space.max_edges is None or cell.num_edges <= space.max_edges)
    if ok and space.contains(cell):
        return cell, False
    if cell.is_zero:
        _repair_path(adj, ops, op_logp, edge_logit)
    if space.max_edges is not None and not _limit_edges(adj, ops, edge_logit, space.max_edges):
        return None, True
    cell = codec.decode_one(adj, ops)
    if cell.is_zero or not space.contains(cell):
        return None, True
    return cell, True


@torch.no_grad()
def decode_logits(op_logits: torch.Tensor, edge_logits: torch.Tensor, codec: CellCodec,
                  space: DesignSpace | None = None,
                  known: set[int] | None = None) -> list[tuple[Cell | None, bool | None]]:
    """Cells of a batch of decoder outputs, repaired where invalid (module doc, step 4).

    Returns ``(cell or None, repaired)`` per row: the pruned member cell (never the zero cell)
    and whether the most likely layout had to be repaired; None when repair could not make a
    member of ``space`` (default: the codec's space). A row whose most likely layout is a member
    whose network code is in ``known`` comes back as ``(None, None)`` without building its cell
    (the sampler's duplicates: most draws of a large request).

    Shapes:
        op_logits [B, N-2, K+1] (slot ops: absent + the space's K ops), edge_logits
        [B, N(N-1)/2] (pairs i < j in ``torch.triu_indices(N, N, 1)`` order).
    """
    sp = codec.space if space is None else space
    N, K = codec.num_nodes, len(codec.ops)
    B = op_logits.shape[0]
    if op_logits.dim() != 3 or tuple(op_logits.shape[1:]) != (N - 2, K + 1):
        raise ValueError(f"op_logits must have shape [B, {N - 2}, {K + 1}], got {list(op_logits.shape)}")
    P = N * (N - 1) // 2
    if edge_logits.dim() != 2 or tuple(edge_logits.shape) != (B, P):
        raise ValueError(f"edge_logits must have shape [{B}, {P}], got {list(edge_logits.shape)}")
    op_logp = torch.log_softmax(op_logits.double(), -1).cpu().numpy()  # [B, N-2, K+1]
    el = edge_logits.double().cpu().numpy()  # [B, P]
    iu = np.triu_indices(N, 1)
    E = np.full((B, N, N), -np.inf)  # [B, N, N], -inf on and below the diagonal (never an edge)
    E[:, iu[0], iu[1]] = el
    # The most likely layouts of the whole batch, pruned by the native kernel: an absent slot
    # loses its edges (so no path runs through it) and pruning then drops it, as decode_one
    # does; a layout without a path, or one that is not a member, goes through _decode_one.
    slot_ops = op_logp.argmax(-1)  # [B, N-2], 0 = absent
    present = np.ones((B, N), dtype=bool)
    present[:, 1:-1] = slot_ops >= 1
    adj = (E > 0) & present[:, :, None] & present[:, None, :]
    labels = np.zeros((B, N), dtype=np.int8)
    labels[:, 1:-1] = slot_ops
    pa, pl, pn = (t.numpy() for t in dag_prune(torch.from_numpy(adj.astype(np.uint8)), torch.from_numpy(labels),
                                                torch.full((B,), N, dtype=torch.int8)))
    # membership = path, ops, sizes (unless the space has rules of its own)
    plain_members = type(sp).validate is DesignSpace.validate and type(sp).contains is DesignSpace.contains
    names = (_ops.INPUT, *codec.ops, _ops.OUTPUT)
    # the pruned graphs' canonical and network codes, natively from the same arrays (the cells
    # remember them); the kernels read op labels (Cell.labels()) at the op vertices only
    rows = np.flatnonzero(pn >= 2)
    to_label = np.asarray([0] + [_ops.op_label(o) for o in codec.ops], dtype=np.int8)
    lab = to_label[np.clip(pl[rows], 0, None)]  # (padding, -1, reads as 0)
    ra, rl, rn = torch.from_numpy(np.ascontiguousarray(pa[rows])), torch.from_numpy(lab), torch.from_numpy(pn[rows])
    canon = dict(zip(rows.tolist(), dag_canonical_code(ra, rl, rn).tolist()))
    net = dict(zip(rows.tolist(), dag_network_code(ra, rl, rn, _ops.identity_labels())))
    ops_fit = set(codec.ops) <= set(sp.ops)  # else checked per cell
    edges = pa.sum(axis=(1, 2)).tolist() if sp.max_edges is not None else None
    pn_list = pn.tolist()
    skip = np.zeros(B, dtype=bool)
    if known and plain_members and ops_fit:  # a member by size alone: its cell would be a duplicate
        for b in rows.tolist():
            k = pn_list[b]
            skip[b] = (net[b] in known and k <= sp.max_nodes and (edges is None or edges[b] <= sp.max_edges))
    build = np.flatnonzero(~skip)
    pa_rows = dict(zip(build.tolist(), pa[build].tolist()))
    pl_rows = dict(zip(build.tolist(), pl[build].tolist()))
    every = [tuple(range(k)) for k in range(N + 1)]  # a pruned cell keeps all its vertices
    out: list[tuple[Cell | None, bool | None]] = []
    for b in range(B):
        if skip[b]:
            out.append((None, None))
            continue
        k = pn_list[b]
        cell = None
        if k >= 2:
            cell = Cell._from_int_rows([r[:k] for r in pa_rows[b][:k]],
                                       [names[0]] + [names[x] for x in pl_rows[b][1:k - 1]] + [names[-1]])
            cell._keep, cell._canon, cell._net = every[k], canon[b], net[b]
            fits = (k <= sp.max_nodes and (ops_fit or set(cell.ops[1:-1]) <= set(sp.ops))
                    and (edges is None or edges[b] <= sp.max_edges))
            if not (fits if plain_members else sp.contains(cell)):
                cell = None
        out.append((cell, False) if cell is not None else _decode_one(codec, sp, op_logp[b], E[b]))
    return out


def _round_noise(model: SamplingModel, generator: torch.Generator, size: int, temperature: float) -> torch.Tensor:
    """``temperature * N(0, I)`` noise for one round, ``[size, D]`` float64, from the CPU generator."""
    return torch.randn((size, model.flow.latent), generator=generator, dtype=torch.float64) * float(temperature)


def _solve_round(model: SamplingModel, c_row: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow's latents for ``noise`` under the condition ``c_row [1, A]``."""
    p = model.flow._param
    with torch.no_grad():  # (here too: grad mode is per thread, and this may run in a worker)
        return model.flow.sample(c_row.to(p.device, p.dtype).expand(noise.shape[0], -1).contiguous(),
                                 noise=noise.to(p.device, p.dtype))


def _decode_round(model: SamplingModel, z: torch.Tensor,
                  known: set[int] | None) -> list[tuple[Cell | None, bool | None]]:
    vae = model.vae
    with torch.no_grad():
        op_logits, edge_logits = vae.model.decode_logits(z.to(vae.device, torch.float32))
    return decode_logits(op_logits, edge_logits, vae.codec, model.space, known)


def draw_round(model: SamplingModel, c_row: torch.Tensor, size: int, generator: torch.Generator,
               temperature: float = 1.0,
               known: set[int] | None = None) -> tuple[torch.Tensor, list[tuple[Cell | None, bool | None]]]:
    """One round of draws (steps 3-4 of the module doc): ``size`` noise vectors
    ``temperature * N(0, I)`` from the CPU ``generator``, the flow's latents under the condition
    ``c_row [1, A]`` (the flow's standardised units), decoded and repaired.

    Returns ``(z [size, D], [(cell or None, repaired)] * size)``; rows that decode to a network
    in ``known`` are ``(None, None)`` (:func:`decode_logits`).
    """
    z = _solve_round(model, c_row, _round_noise(model, generator, size, temperature))
    return z, _decode_round(model, z, known)


_AHEAD = 4  # rounds solved ahead of the one being decoded, at most (worker and calling thread together)


def _rounds(model: SamplingModel, c_row: torch.Tensor, generator: torch.Generator, temperature: float, chunk: int,
            limit: int, known: set[int]) -> Iterator[tuple[int, torch.Tensor, list[tuple[Cell | None, bool | None]]]]:
    """The rounds of :func:`draw_round` up to ``limit`` latents, as ``(size, z, decoded)``, with
    the flow's solves running ahead in a worker thread while the caller decodes and examines
    round ``k`` (the native solve releases the GIL). When the caller would otherwise wait for
    the worker (the solves take longer than the decoding: nb101-like's flow), it solves a later
    round itself meanwhile, keeping one round queued for the worker, up to ``_AHEAD`` rounds
    ahead. The noise is drawn in the calling thread in round order and each solve depends only
    on its own noise (bitwise: which thread solves a round changes nothing), so the rounds are
    exactly those of :func:`draw_round` one after another; ``known`` is read when a round is
    decoded (after the caller has examined the previous one). On the CPU this thread gives up
    one of torch's threads to the worker until the generator is closed; rounds solved ahead and
    not consumed are dropped (queued ones cancelled) when it is."""
    from concurrent.futures import Future, ThreadPoolExecutor

    if min(chunk, limit) <= 0:
        return
    threads = torch.get_num_threads()
    # one core for the solves ahead; with one core, solving in this thread too would only time-slice
    helps = model.flow._param.device.type == "cpu" and threads > 1
    if helps:
        torch.set_num_threads(threads - 1)
    pool = ThreadPoolExecutor(1, thread_name_prefix="cgnf-flow")
    planned = 0  # latents whose noise is drawn
    ahead: list[tuple[int, Future]] = []  # in round order: the worker's, and finished ones solved here

    def noise() -> tuple[int, torch.Tensor] | None:
        nonlocal planned
        size = min(chunk, limit - planned)
        if size <= 0:
            return None
        planned += size
        return size, _round_noise(model, generator, size, temperature)

    def submit() -> None:
        nxt = noise()
        if nxt is not None:
            ahead.append((nxt[0], pool.submit(_solve_round, model, c_row, nxt[1])))

    def solve_here() -> bool:
        nxt = noise()
        if nxt is None:
            return False
        done: Future = Future()
        try:  # a failed solve fails its round when (if) the caller reaches it, as in the worker
            done.set_result(_solve_round(model, c_row, nxt[1]))
        except Exception as e:
            done.set_exception(e)
        ahead.append((nxt[0], done))
        return True

    try:
        submit()
        while ahead:
            size, head = ahead[0]
            if helps and not head.done() and len(ahead) < _AHEAD:
                if not any(not f.running() and not f.done() for _, f in ahead):
                    submit()  # the worker's next round, so it does not idle while this thread solves
                if len(ahead) < _AHEAD and solve_here():
                    continue
            del ahead[0]
            z = head.result()
            if all(f.done() for _, f in ahead):
                submit()  # keep the worker busy while this round is decoded
            yield size, z, _decode_round(model, z, known)
    finally:
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            torch.set_num_threads(threads)


# -- results -------------------------------------------------------------------------------
@dataclass
class SampledCell:
    """One sampled cell and what is known about it.

    ``predicted``: the G-VAE predictor on the cell (store units; params/flops in
    millions). ``params``/``flops``: exact counts of the network in the space's macro skeleton.
    ``latent``: the flow's sample that decoded to it. ``repaired``: the decoder's most likely
    layout was invalid and was repaired (module doc).
    """

    cell: Cell
    code: int
    network_code: int
    in_seed_space: bool | None
    nb201: str | None
    nb101_hash: str | None
    predicted: dict[str, float]
    params: int
    flops: int
    latent: list[float] = field(default_factory=list)
    repaired: bool = False

    @property
    def matrix(self) -> list[list[int]]:
        return [list(r) for r in self.cell.adjacency]

    @property
    def ops(self) -> list[str]:
        return list(self.cell.ops)

    def to_json(self) -> dict[str, Any]:
        """``matrix, ops, code, in_seed_space, nb201, nb101_hash, predicted, params, flops, repaired, latent``."""
        return {"matrix": self.matrix, "ops": self.ops, "code": self.code, "in_seed_space": self.in_seed_space,
                "nb201": self.nb201, "nb101_hash": self.nb101_hash,
                "predicted": {k: float(v) for k, v in self.predicted.items()},
                "params": self.params, "flops": self.flops, "repaired": self.repaired,
                "latent": [float(v) for v in self.latent]}


def _skeleton(space: DesignSpace) -> str:
    from .zc.run import skeleton_of

    return skeleton_of(space.name)


def _exact_counts(cell: Cell, skeleton: str, cache: dict[int, tuple[int, int]], key: int) -> tuple[int, int]:
    """(params, FLOPs) of the network ``cell`` builds in ``skeleton``: the closed forms
    ``nets.nb201``/``nets.nb101`` ``param_count`` / ``flop_count`` (equal to the built module's
    counts, tested; building NB101's 128-channel network per candidate took seconds)."""
    if key not in cache:
        from . import nets

        mod = nets.nb201 if skeleton == "nb201" else nets.nb101
        cache[key] = (mod.param_count(cell), mod.flop_count(cell))
    return cache[key]


def _fill_counts(cells: dict[int, Cell], skeleton: str, cache: dict[int, tuple[int, int]]) -> None:
    """:func:`_exact_counts` of many cells (network code -> cell) into ``cache``: NB101's closed
    forms in one array pass (``nets.nb101.count_batch``), NB201's per cell (cached per op)."""
    todo = {k: c for k, c in cells.items() if k not in cache}
    if skeleton == "nb101" and todo:
        from .nets import nb101

        ps, fs = nb101.count_batch(list(todo.values()))
        cache.update(zip(todo, zip(ps.tolist(), fs.tolist())))
    for k, c in todo.items():
        _exact_counts(c, skeleton, cache, k)


# -- sampling ------------------------------------------------------------------------------
def _check_args(n: Any, temperature: Any, seed: Any, novel_only: Any, chunk: Any, max_draws: Any,
                oversample: Any = 1.0) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
            math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(novel_only, bool):
        raise ValueError(f"novel_only must be a bool, got {novel_only!r}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    if max_draws is not None and (isinstance(max_draws, bool) or not isinstance(max_draws, int) or max_draws < 1):
        raise ValueError(f"max_draws must be None or an int >= 1, got {max_draws!r}")
    if isinstance(oversample, bool) or not isinstance(oversample, (int, float)) or not (
            math.isfinite(oversample) and oversample >= 1):
        raise ValueError(f"oversample must be a finite number >= 1, got {oversample!r}")


def sample_with_info(reference: Any, condition: Mapping[str, Any] | None = None, n: int = 20,
                     space: str | DesignSpace = "nb201-like", temperature: float = 1.0, seed: int = 0,
                     novel_only: bool = False, device: str | torch.device = "cpu",
                     model: str | os.PathLike | SamplingModel | None = None, *, chunk: int = DEFAULT_CHUNK,
                     max_draws: int | None = None,
                     oversample: float = DEFAULT_OVERSAMPLE) -> tuple[list[SampledCell], dict[str, Any]]:
    """:func:`sample`, plus a dict describing the run: the reference, its predicted attributes,
    the condition targets, and how many latents were drawn, repaired, dropped (and why)."""
    _check_args(n, temperature, seed, novel_only, chunk, max_draws, oversample)
    check_device(device)
    sp = get_space(space)
    seed_name = SEED_SPACES.get(sp.name)
    if novel_only and seed_name is None:
        raise ValueError(f"novel_only needs a seed space; space {sp.name!r} has none (built-in families: "
                         f"{', '.join(SEED_SPACES)})")
    if novel_only and seed_name == sp.name:
        raise ValueError(f"novel_only: space {sp.name!r} is its own seed space, so no cell of it is novel; sample "
                         f"from {sp.name}-like instead")
    ref = resolve_reference(reference, sp)
    m = _resolve_model(model, sp, device)
    vae, flow, conds = m.vae, m.flow, m.conditions
    targets = parse_condition(condition, conds.names)
    seed_space = get_space(seed_name) if seed_name is not None else None

    ref_pred = {k: float(v[0]) for k, v in vae.predict([ref]).items()}
    ref_row = [ref_pred[a] for a in conds.names]
    c_ref = conds.to_flow(torch.tensor([ref_row], dtype=torch.float64))[0]  # [A]
    given: dict[int, float] = {}
    for i, a in enumerate(conds.names):
        t = targets.get(a)
        if t is None:
            continue
        v = t.target(ref_pred[a])
        if not math.isfinite(v):
            raise ValueError(f"condition {a!r}: the target {v!r} is not a finite number")
        row = list(ref_row)
        row[i] = v
        given[i] = float(conds.to_flow(torch.tensor([row], dtype=torch.float64))[0, i])
    # unspecified attributes move with the specified ones as they co-vary in the training data
    c_std = conds.follow(c_ref, given)  # [A]
    raw = conds.from_flow(c_std[None])[0].tolist()
    pdev = flow._param.device
    pdt = flow._param.dtype
    c_row = c_std[None].to(pdev, pdt)  # [1, A]
    bounds = [t for t in targets.values() if t.attribute in COUNT_ATTRIBUTES and t.kind in ("at_most", "at_least")]
    skeleton = _skeleton(sp)
    counts_cache: dict[int, tuple[int, int]] = {}
    if skeleton == "nb201" and any(t.kind == "at_most" for t in bounds):
        # NB201 skeleton: an op vertex only adds parameters and FLOPs, so input -> output is the smallest network
        smallest = Cell([[0, 1], [0, 0]], ["input", "output"])
        low = _exact_counts(smallest, skeleton, counts_cache, smallest.network_code())
        for t in bounds:
            v = low[COUNT_ATTRIBUTES.index(t.attribute)] / 1e6
            if t.kind == "at_most" and t.value < v:
                raise ValueError(f"condition {t.attribute!r}: {t.text!r} is impossible in space {sp.name!r}: the "
                                 f"smallest network (input -> output) has {v:.4f}M {t.attribute}")
    limit = max_draws if max_draws is not None else math.ceil(max(100 * n, 10 * chunk) / chunk) * chunk

    gen = torch.Generator().manual_seed(seed)  # CPU: the same noise on every device
    seen: set[int] = set()
    net_of_class: dict[int, int] = {}  # canonical code -> network code
    # (cell, network code, repaired, latent [D], in seed space, exact counts) per candidate
    kept: list[tuple[Cell, int, bool, np.ndarray, bool | None, tuple[int, int] | None]] = []
    stats = {"drawn": 0, "rounds": 0, "examined": 0, "repaired": 0, "invalid": 0, "duplicates": 0,
             "in_seed_space_dropped": 0, "outside_bounds": 0}
    vae.model.eval()
    want = max(n, math.ceil(oversample * n - 1e-9))  # candidates gathered before selecting n
    dry = 0  # latents drawn since the last new candidate
    # (closing: waits for the round being solved ahead and restores torch's thread count,
    # also when this loop raises)
    with contextlib.closing(_rounds(m, c_row, gen, temperature, chunk, limit, seen)) as rounds:
        for size, z, decoded in rounds:
            # z [size, D], size x (cell | None, repaired); (None, None): a network already seen
            zc = z.double().cpu().numpy()
            stats["drawn"] += size
            stats["rounds"] += 1
            before = len(kept)
            # canonical codes of the round in one native batch, then network codes (a function of
            # the pruned cell's class) natively for the classes not met before
            cells = [cell for cell, _ in decoded if cell is not None]
            new_classes = {}
            for cell, code in zip(cells, cell_canonical_codes(cells)):
                if code not in net_of_class:
                    new_classes.setdefault(code, cell)
            net_of_class.update(zip(new_classes, cell_network_codes(list(new_classes.values()))))
            for b, (cell, repaired) in enumerate(decoded):
                stats["examined"] += 1
                if repaired is None:
                    stats["duplicates"] += 1
                    continue
                if cell is None:
                    stats["invalid"] += 1
                    continue
                stats["repaired"] += int(repaired)
                key = net_of_class[cell.canonical_code()]
                if key in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(key)
                # (decided here only when it filters; otherwise for the cells returned, below)
                in_seed = seed_space.contains(cell) if novel_only and seed_space is not None else None
                if novel_only and in_seed:
                    stats["in_seed_space_dropped"] += 1
                    continue
                counts = None
                if bounds:  # exact counts build the network: only when a bound needs them before selection
                    counts = _exact_counts(cell, skeleton, counts_cache, key)
                    exact = {"params": counts[0] / 1e6, "flops": counts[1] / 1e6}
                    if not all(t.admits(exact[t.attribute]) for t in bounds):
                        stats["outside_bounds"] += 1
                        continue
                kept.append((cell, key, repaired, zc[b], in_seed, counts))  # (a list only for the cells returned)
                if len(kept) == want:
                    break
            dry = 0 if len(kept) > before else dry + size
            if len(kept) >= want:
                break
            if len(kept) >= n and dry >= max(chunk, DEFAULT_CHUNK):
                break  # enough cells, and the last draws found no new candidate: the extra pool is exhausted
    if len(kept) < n:
        why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in stats.items()
                        if k not in ("drawn", "rounds", "examined", "repaired") and v)
        cond = ", ".join(t.describe() for t in targets.values()) or "the reference's own attributes"
        raise SamplingError(f"found {len(kept)} of {n} distinct valid cells after drawing {stats['drawn']} latents "
                            f"in {stats['rounds']} rounds ({why or 'nothing dropped'}) under {cond}; loosen the "
                            f"condition, raise the temperature, or ask for fewer cells")
    # selection: the n candidates whose attributes are closest to the condition (standardised
    # units, every conditioned attribute; exact params/FLOPs where they are closed forms, the
    # predictor otherwise; a bound only counts when violated); ties keep the draw order
    pred = vae.predict([k[0] for k in kept], members=True)  # (decoded members of the space)
    cand = np.stack([np.asarray(pred[a], dtype=np.float64) for a in conds.names], 1)  # [K, A]
    if skeleton == "nb201":
        for j, a in enumerate(conds.names):
            if a in COUNT_ATTRIBUTES:
                col = COUNT_ATTRIBUTES.index(a)
                cand[:, j] = [(k[5] or _exact_counts(k[0], skeleton, counts_cache, k[1]))[col] / 1e6 for k in kept]
    gap = (conds.to_flow(torch.from_numpy(cand)) - c_std[None]).numpy()  # [K, A]
    for j, a in enumerate(conds.names):
        t = targets.get(a)
        if t is not None and t.kind == "at_most":
            gap[:, j] = np.maximum(gap[:, j], 0.0)
        elif t is not None and t.kind == "at_least":
            gap[:, j] = np.minimum(gap[:, j], 0.0)
    dist = (gap ** 2).sum(1)  # [K]
    order = np.argsort(dist, kind="stable")[:n] if oversample > 1 else np.arange(len(kept))  # 1: draw order
    stats["candidates"] = len(kept)
    kept = [kept[i] for i in order]
    pred = {a: np.asarray(v)[order] for a, v in pred.items()}
    # NB101 fingerprints of the returned cells with NB101 ops, natively in one batch
    nb101_rows = [i for i, k in enumerate(kept) if all(o in NB101_OPS for o in k[0].ops[1:-1])]
    nb101_hashes = dict(zip(nb101_rows, dag_nb101_hash(*batch_from_cells(
        [kept[i][0].pruned() for i in nb101_rows], MAX_NODES, nb101_labels=True)))) if nb101_rows else {}
    _fill_counts({k[1]: k[0] for k in kept if k[5] is None}, skeleton, counts_cache)
    out: list[SampledCell] = []
    for i, (cell, key, repaired, latent, in_seed, counts) in enumerate(kept):
        if in_seed is None and seed_space is not None:
            in_seed = seed_space.contains(cell)
        params, flops = counts if counts is not None else _exact_counts(cell, skeleton, counts_cache, key)
        nb201_str = cell.to_nb201() if all(o in NB201_NODE_OPS for o in cell.ops[1:-1]) else None
        nb101 = nb101_hashes.get(i)
        out.append(SampledCell(cell=cell, code=cell.canonical_code(), network_code=key, in_seed_space=in_seed,
                               nb201=nb201_str, nb101_hash=nb101, predicted={a: float(v[i]) for a, v in pred.items()},
                               params=int(params), flops=int(flops), latent=latent.tolist(), repaired=repaired))
    info = {"space": sp.name, "seed_space": seed_name, "reference": ref, "reference_predicted": ref_pred,
            "reference_nb201": ref.to_nb201() if seed_name == "nb201" else None,
            "targets": {a: v for a, v in zip(conds.names, raw)}, "condition": targets,
            "model": str(m.directory) if m.directory is not None else None, **stats}
    return out, info


def sample(reference: Any, condition: Mapping[str, Any] | None = None, n: int = 20,
           space: str | DesignSpace = "nb201-like", temperature: float = 1.0, seed: int = 0,
           novel_only: bool = False, device: str | torch.device = "cpu",
           model: str | os.PathLike | SamplingModel | None = None, *, chunk: int = DEFAULT_CHUNK,
           max_draws: int | None = None, oversample: float = DEFAULT_OVERSAMPLE) -> list[SampledCell]:
    """``n`` distinct new cells around ``reference`` under ``condition`` (module doc).

    Args:
        reference: a :class:`Cell`, an NB201 string, an NB101 ``(matrix, ops)`` pair, or
            ``"best"`` (:data:`BEST_NB201` / :data:`BEST_NB101` for the space's family).
        condition: attribute -> value (:func:`parse_condition`); attributes not given follow
            the given ones from the reference's predicted values (module doc, step 2). None:
            the reference's own predicted attributes.
        n: number of distinct cells (by network code) to return.
        space: the design space (a name or a :class:`DesignSpace`); the model must be for it.
        temperature: standard deviation of the flow's base noise (1 = the trained distribution).
        seed: the noise seed; same arguments and seed -> same cells.
        novel_only: drop cells inside the seed space (NB201 for nb201-like, NB101 for nb101-like).
        device: where the G-VAE and the flow are loaded and run (a loaded :class:`SamplingModel`
            stays where it is).
        model: a model directory (``gvae/`` + ``flow/``, module doc), a loaded
            :class:`SamplingModel`, or None for the installed pretrained default.
        chunk: latents per round.
        max_draws: latents drawn at most before :class:`SamplingError` (default
            ``max(100 n, 10 chunk)`` rounded up to whole chunks).
        oversample: distinct valid candidates gathered per returned cell; the ``n`` whose
            predicted attributes are closest to the condition are returned (1: the first ``n``
            drawn, in draw order).

    Returns:
        ``n`` :class:`SampledCell`, closest to the condition first.
    """
    return sample_with_info(reference, condition, n, space, temperature, seed, novel_only, device, model,
                            chunk=chunk, max_draws=max_draws, oversample=oversample)[0]


# -- pictures ------------------------------------------------------------------------------
_SHORT = {"input": "in", "output": "out", "nor_conv_3x3": "conv3", "nor_conv_1x1": "conv1", "avg_pool_3x3": "pool",
          "skip_connect": "skip", "conv3x3-bn-relu": "conv3", "conv1x1-bn-relu": "conv1", "maxpool3x3": "maxpool"}
_COLOR = {"input": "#d9d9d9", "output": "#d9d9d9", "nor_conv_3x3": "#fdae6b", "conv3x3-bn-relu": "#fdae6b",
          "nor_conv_1x1": "#9ecae1", "conv1x1-bn-relu": "#9ecae1", "avg_pool_3x3": "#a1d99b", "maxpool3x3": "#a1d99b",
          "skip_connect": "#ffffff"}


def short_op(name: str) -> str:
    """A short label for an op (``nor_conv_3x3`` -> ``conv3``)."""
    return _SHORT.get(name, name)


def cell_text(cell: Cell) -> str:
    """A compact one-line cell: ``vertex:op<inputs`` per op vertex, then the output's inputs."""
    adj = cell.adjacency
    n = cell.num_nodes
    parts = []
    for v in range(1, n):
        preds = ",".join(str(u) for u in range(v) if adj[u][v])
        name = "out" if v == n - 1 else f"{v}:{short_op(cell.ops[v])}"
        parts.append(f"{name}<{preds}")
    return " ".join(parts)


def layered_positions(cell: Cell) -> list[tuple[float, float]]:
    """``(x, y)`` per vertex: x = length of the longest path from the input (layers left to
    right), vertices of a layer spread evenly around y = 0."""
    n = cell.num_nodes
    adj = cell.adjacency
    depth = [0] * n
    for v in range(1, n):
        preds = [depth[u] + 1 for u in range(v) if adj[u][v]]
        depth[v] = max(preds) if preds else 0
    depth[n - 1] = max(depth[n - 1], max(depth[:-1]) + 1)
    layers: dict[int, list[int]] = {}
    for v in range(n):
        layers.setdefault(depth[v], []).append(v)
    pos = [(0.0, 0.0)] * n
    for d, vs in layers.items():
        for k, v in enumerate(vs):
            pos[v] = (float(d), (len(vs) - 1) / 2.0 - k)
    return pos


def draw_cells(cells: Sequence[SampledCell | Cell], path: str | os.PathLike, *, titles: Sequence[str] | None = None,
               key_attribute: str | None = None, cols: int = 5, dpi: int = 110) -> None:
    """Draws cells as a grid of labelled DAGs to a PNG at ``path`` (written atomically).

    Each panel title: the cell's number, params and FLOPs, and the predicted ``key_attribute``
    (default: the first predicted attribute that is not params/flops) unless ``titles`` is
    given. Needs matplotlib (``pip install 'cgnf_fast[plot]'``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ValueError("drawing cells needs matplotlib: pip install 'cgnf_fast[plot]'") from None
    if not cells:
        raise ValueError("no cells to draw")
    if titles is not None and len(titles) != len(cells):
        raise ValueError(f"titles has {len(titles)} entries for {len(cells)} cells")
    cols = max(1, min(cols, len(cells)))
    rows = math.ceil(len(cells) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * rows), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, item in enumerate(cells):
        cell = item.cell if isinstance(item, SampledCell) else item
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        pos = layered_positions(cell)
        adj = cell.adjacency
        side = 1.0
        for u in range(cell.num_nodes):
            for v in range(cell.num_nodes):
                if not adj[u][v]:
                    continue
                span = pos[v][0] - pos[u][0]
                if span <= 1:  # neighbouring layers: a straight arrow
                    rad = 0.0
                else:  # skipping layers: an arc, alternately above and below the boxes it passes
                    rad = side * min(0.12 + 0.06 * span, 0.45)
                    side = -side
                ax.annotate("", xy=pos[v], xytext=pos[u],
                            arrowprops=dict(arrowstyle="-|>", color="#555555", lw=0.9, shrinkA=11, shrinkB=11,
                                            connectionstyle=f"arc3,rad={rad}"))
        for v, (x, y) in enumerate(pos):
            op = cell.ops[v]
            ax.text(x, y, short_op(op), ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round,pad=0.35", fc=_COLOR.get(op, "#fee391"), ec="#333333", lw=0.8))
        xs, ys = [p[0] for p in pos], [p[1] for p in pos]
        ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
        ax.set_ylim(min(ys) - 1.0 - 0.25 * max(xs), max(ys) + 1.0 + 0.25 * max(xs))
        if titles is not None:
            title = titles[i]
        elif isinstance(item, SampledCell):
            key = key_attribute or next((a for a in item.predicted if a not in COUNT_ATTRIBUTES),
                                        next(iter(item.predicted), None))
            extra = f"\n{key} {item.predicted[key]:.4g} (pred.)" if key in item.predicted else ""
            title = f"#{i + 1}  {item.params / 1e6:.3f}M params  {item.flops / 1e6:.1f}M FLOPs{extra}"
        else:
            title = f"#{i + 1}"
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    p = Path(path)
    tmp = p.with_name(p.name + ".partial")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
