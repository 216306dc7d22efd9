"""``sample()``: new cells around a reference, under target attributes, from a trained G-VAE +
conditional flow (a model directory: :mod:`cgnf_fast.sampling.model`).

Mechanism, per call:

1. *Reference* (:func:`~cgnf_fast.sampling.reference.resolve_reference`): a
   :class:`~cgnf_fast.space.Cell`, an NB201 string, an NB101 ``(matrix, ops)`` pair or
   ``"best"`` (``BEST_NB201`` for NB201-family spaces, ``BEST_NB101`` for NB101-family ones); it
   must be a member of the space (pruned, not the zero cell).
2. *Condition* (:mod:`cgnf_fast.sampling.conditions`): the reference's predicted attributes
   (G-VAE predictor on its encoding), overridden per attribute by ``condition``: an absolute
   value, a relative change of the reference's predicted value, or a bound. The values go
   through the flow's :class:`~cgnf_fast.sampling.conditions.FlowConditions` (log for
   params/FLOPs, standardisation) to the condition vector ``c``. Attributes the condition leaves
   out do not stay frozen at the reference's values: they move with the specified ones as they
   co-vary over the flow's training cells (:meth:`FlowConditions.follow`). Asking for more
   params with the FLOPs pinned at the reference's would ask the flow for cells that do not
   exist (in NB201-like cells the two correlate at 0.998); name an attribute to pin it.
3. *Draw* (:mod:`cgnf_fast.sampling.rounds`): in chunks of ``chunk`` latents: noise
   ``e ~ N(0, temperature^2 I)`` from a CPU ``torch.Generator`` seeded with ``seed``,
   ``z = flow.sample(c, noise=e)``, the G-VAE decoder's logits of ``z``.
4. *Decode and repair* (:mod:`cgnf_fast.models.decode`): the most likely layout, pruned, and
   repaired minimally in likelihood terms when it is not a member of the space.
5. *Filter*: dedupe by :meth:`~cgnf_fast.space.Cell.network_code` (two cells that build the
   same network are one architecture), drop seed-space cells with ``novel_only``, drop cells
   whose *exact* params/FLOPs (:class:`cgnf_fast.nets.ExactCounts`, the space's macro skeleton)
   violate a params/FLOPs bound. Bounds on other attributes only set the target (the
   reference's value clipped to the bound).
6. Repeat 3-5 until ``ceil(oversample * n)`` candidates are kept, ``max_draws`` latents were
   drawn, or (with ``n`` candidates already) the last ``max(chunk, 256)`` draws added none;
   fewer than ``n`` by then: :class:`SamplingError` with the counts of what was dropped and why.
7. *Select*: the ``n`` candidates whose attributes are closest to the condition vector are
   returned, closest first: squared distance in the flow's standardised units over every
   conditioned attribute, with the G-VAE predictor's values (exact params/FLOPs in NB201's
   skeleton, where they are closed forms); a bounded attribute only counts where it violates
   the bound. The flow proposes where in the latent space to look; the selection picks among
   the proposals. ``oversample=1`` returns the first ``n`` candidates in the order drawn (then a
   smaller ``n`` gives a prefix).

The G-VAE predictor gives each kept cell its ``predicted`` attributes (store units: ZC proxies
as stored, params and FLOPs in millions); ``params``/``flops`` are exact counts. Results are
deterministic for a seed (same arguments, same model, same device).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .._native import check_device
from ..nets import ExactCounts
from ..ops import dag_nb101_hash
from ..space import NB101_OPS, NB201_NODE_OPS, Cell, DesignSpace, batch_from_cells, cell_canonical_codes
from ..space import MAX_NODES, cell_network_codes
from ..space import get as get_space
from ..space import names as space_names
from .conditions import COUNT_ATTRIBUTES, FlowConditions, Target, condition_vector, parse_condition, ridge_step
from .model import SamplingModel, resolve_model
from .reference import resolve_reference
from .rounds import _rounds

__all__ = ["DEFAULT_CHUNK", "DEFAULT_OVERSAMPLE", "SampledCell", "SamplingError", "sample", "sample_with_info"]

#: Latents per round.
DEFAULT_CHUNK = 256
#: Seconds a call runs before its progress bar appears (short calls print nothing).
PROGRESS_DELAY = 1.0
#: Distinct valid candidates gathered per returned cell; the n closest to the target are kept.
DEFAULT_OVERSAMPLE = 5.0
#: Most cells one call returns.
MAX_N = 10_000_000


class SamplingError(ValueError):
    """Fewer than ``n`` cells passed the filters within ``max_draws`` latents. ``found``: how many
    did (the same call with ``n=found`` draws the same latents and returns them)."""

    def __init__(self, message: str, found: int = 0) -> None:
        super().__init__(message)
        self.found = found


@dataclass
class SampledCell:
    """One sampled cell and what is known about it.

    ``predicted``: the G-VAE predictor on the cell (store units; params/flops in
    millions). ``params``/``flops``: exact counts of the network in the space's macro skeleton.
    ``latent``: the flow's sample that decoded to it. ``repaired``: the decoder's most likely
    layout was invalid and was repaired (:mod:`cgnf_fast.models.decode`).
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

    def __repr__(self) -> str:
        """The cell as a person reads it (its NB201 string, else the compact ``1:conv3<0 ... out<..``
        notation of ``cgnf sample``'s table), its exact counts and predictions; the latent and
        the codes are left out (they are fields)."""
        from .drawing import cell_text

        pred = ", ".join(f"{k}={v:.4g}M" if k in COUNT_ATTRIBUTES else f"{k}={v:.4g}" for k, v in self.predicted.items())
        return (f"SampledCell({self.nb201 or cell_text(self.cell)!r}, params={self.params:,}, flops={self.flops:,}, "
                f"predicted={{{pred}}}, in_seed_space={self.in_seed_space}, repaired={self.repaired})")

    @property
    def matrix(self) -> list[list[int]]:
        return [list(r) for r in self.cell.adjacency]

    @property
    def ops(self) -> list[str]:
        return list(self.cell.ops)

    def to_json(self) -> dict[str, Any]:
        """``matrix, ops, code, in_seed_space, nb201, nb101_hash, predicted, params, flops, repaired, latent``.

        ``params`` and ``flops`` are the exact counts (integers); ``predicted`` holds the G-VAE's
        predictions, the counted attributes under names that carry their unit
        (``params_millions``, ``flops_millions``), the proxies under their own names."""
        return {"matrix": self.matrix, "ops": self.ops, "code": self.code, "in_seed_space": self.in_seed_space,
                "nb201": self.nb201, "nb101_hash": self.nb101_hash,
                "predicted": {(f"{k}_millions" if k in COUNT_ATTRIBUTES else k): float(v)
                              for k, v in self.predicted.items()},
                "params": self.params, "flops": self.flops, "repaired": self.repaired,
                "latent": [float(v) for v in self.latent]}


@dataclass
class _Candidate:
    """A distinct valid cell kept from the draws (step 5), before selection."""

    cell: Cell
    network_code: int
    repaired: bool
    latent: np.ndarray  # [D] float64
    #: whether it lies in the seed space (decided while drawing only when ``novel_only`` filters)
    in_seed_space: bool | None
    #: exact (params, FLOPs), when a bound needed them while drawing
    counts: tuple[int, int] | None


# -- arguments ------------------------------------------------------------------------------
def _check_args(n: Any, temperature: Any, seed: Any, novel_only: Any, chunk: Any, max_draws: Any,
                oversample: Any = 1.0) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    if n > MAX_N:
        raise ValueError(f"n must be at most {MAX_N:,} (every candidate is held in memory), got {n:,}; draw in "
                         f"several calls with different seeds")
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


def _seed_space(sp: DesignSpace, novel_only: bool) -> DesignSpace | None:
    """The space's seed space (None when it has none), refusing ``novel_only`` where no cell can be novel."""
    if novel_only and sp.seed_space is None:
        families = ", ".join(n for n in space_names() if get_space(n).seed_space is not None)
        raise ValueError(f"novel_only needs a seed space; space {sp.name!r} has none (built-in families: "
                         f"{families})")
    if novel_only and sp.seed_space == sp.name:
        raise ValueError(f"novel_only: space {sp.name!r} is its own seed space, so no cell of it is novel; sample "
                         f"from {sp.name}-like instead")
    return get_space(sp.seed_space) if sp.seed_space is not None else None


def _chain(ops: list[str]) -> Cell:
    """input -> ops[0] -> ... -> output."""
    n = len(ops) + 2
    return Cell([[int(j == i + 1) for j in range(n)] for i in range(n)], ["input", *ops, "output"])


def _refuse_impossible_bounds(bounds: list[Target], sp: DesignSpace, counts: ExactCounts) -> None:
    """A bound no member can meet is refused up front, in an NB201-skeleton space, where each op
    vertex adds a fixed number of parameters and FLOPs whatever the wiring: the smallest network
    is input -> output, the largest a chain of ``max_nodes - 2`` of the costliest op."""
    if sp.skeleton != "nb201" or not bounds:
        return
    smallest = _chain([])
    low = counts.get(smallest, smallest.network_code())
    chains = [_chain([op] * (sp.max_nodes - 2)) for op in sp.ops]
    high = [max(counts.get(c, c.network_code())[k] for c in chains) for k in range(2)]
    for t in bounds:
        k = COUNT_ATTRIBUTES.index(t.attribute)
        if t.kind == "at_most" and t.value < low[k] / 1e6:
            raise ValueError(f"condition {t.attribute!r}: {t.text!r} is impossible in space {sp.name!r}: the "
                             f"smallest network (input -> output) has {low[k] / 1e6:.4f}M {t.attribute}")
        if t.kind == "at_least" and t.value > high[k] / 1e6:
            raise ValueError(f"condition {t.attribute!r}: {t.text!r} is impossible in space {sp.name!r}: its "
                             f"largest network has {high[k] / 1e6:.4f}M {t.attribute}")


#: A target this many standard deviations of the flow's training conditions away from their mean
#: is refused: the flow has seen nothing like it (its solve fails or its cells ignore it).
MAX_TARGET_STDS = 6.0


def _refuse_uncovered_targets(conditions: FlowConditions, targets: Mapping[str, Target],
                              c_std: torch.Tensor) -> None:
    """Targets far outside the flow's training data (``|c| > MAX_TARGET_STDS`` in its
    standardised units), refused up front naming the attribute and the range it was trained on."""
    for i, a in enumerate(conditions.names):
        z = float(c_std[i])
        if abs(z) <= MAX_TARGET_STDS:
            continue
        lo, hi = conditions.from_flow(torch.tensor([[-3.0] * len(conditions.names), [3.0] * len(conditions.names)],
                                                   dtype=torch.float64))[:, i].tolist()
        asked = f" ({targets[a].text})" if a in targets else " (following the attributes asked for)"
        unit = "M" if a in COUNT_ATTRIBUTES else ""
        raise ValueError(f"condition {a!r}: the target{asked} is {abs(z):.3g} standard deviations from the model's "
                         f"training data, whose {a} lies mostly in {lo:.4g}{unit} .. {hi:.4g}{unit} (mean +- 3 std); "
                         f"ask for a value closer to that range")


# -- steps 3-6: draw, decode, filter ----------------------------------------------------------
@dataclass
class _Draw:
    """What one call draws from: the model, the condition row, and the filters of step 5."""

    model: SamplingModel
    c_row: torch.Tensor  # [1, A] on the flow's device and dtype
    seed_space: DesignSpace | None
    novel_only: bool
    bounds: list[Target]
    counts: ExactCounts
    exclude: Callable[[Cell], bool] | None = None


def _gather(d: _Draw, generator: torch.Generator, temperature: float, chunk: int, limit: int, n: int,
            want: int, bar: Any = None) -> tuple[list[_Candidate], dict[str, int]]:
    """Candidates from rounds of draws until ``want`` are kept or the draws run dry (module doc, 6);
    ``bar`` (a tqdm bar over ``want``, or None) is advanced per round."""
    seen: set[int] = set()
    net_of_class: dict[int, int] = {}  # canonical code -> network code
    kept: list[_Candidate] = []
    stats = {"drawn": 0, "rounds": 0, "examined": 0, "repaired": 0, "invalid": 0, "duplicates": 0,
             "in_seed_space_dropped": 0, "excluded": 0, "outside_bounds": 0}
    dry = 0  # latents drawn since the last new candidate
    # (closing: waits for the round being solved ahead and restores torch's thread count, also
    # when this loop raises)
    with contextlib.closing(_rounds(d.model, d.c_row, generator, temperature, chunk, limit, seen)) as rounds:
        for size, z, decoded in rounds:
            # z [size, D], size x (cell | None, repaired); (None, None): a network already seen
            zc = z.double().cpu().numpy()
            stats["drawn"] += size
            stats["rounds"] += 1
            before = len(kept)
            # canonical codes of the round in one native batch, then network codes (a function of
            # the pruned cell's class) natively for the classes not met before
            cells = [cell for cell, _ in decoded if cell is not None]
            new_classes: dict[int, Cell] = {}
            for cell, code in zip(cells, cell_canonical_codes(cells)):
                if code not in net_of_class:
                    new_classes.setdefault(code, cell)
            net_of_class.update(zip(new_classes, cell_network_codes(list(new_classes.values()))))
            for b, (cell, repaired) in enumerate(decoded):
                cand = _examine(d, cell, repaired, zc[b], net_of_class, seen, stats)
                if cand is not None:
                    kept.append(cand)
                    if len(kept) == want:
                        break
            dry = 0 if len(kept) > before else dry + size
            if bar is not None:
                bar.update(len(kept) - before)
            if len(kept) >= want:
                break
            if len(kept) >= n and dry >= max(chunk, DEFAULT_CHUNK):
                break  # enough cells, and the last draws found no new candidate: the extra pool is exhausted
    return kept, stats


def _examine(d: _Draw, cell: Cell | None, repaired: bool | None, latent: np.ndarray, net_of_class: dict[int, int],
             seen: set[int], stats: dict[str, int]) -> _Candidate | None:
    """One decoded row through the filters of step 5 (counted in ``stats``); the candidate it makes, if any."""
    stats["examined"] += 1
    if repaired is None:
        stats["duplicates"] += 1
        return None
    if cell is None:
        stats["invalid"] += 1
        return None
    stats["repaired"] += int(repaired)
    key = net_of_class[cell.canonical_code()]
    if key in seen:
        stats["duplicates"] += 1
        return None
    seen.add(key)
    # (decided here only when it filters; otherwise for the cells returned)
    in_seed = d.seed_space.contains(cell) if d.novel_only and d.seed_space is not None else None
    if d.novel_only and in_seed:
        stats["in_seed_space_dropped"] += 1
        return None
    if d.exclude is not None and d.exclude(cell):
        stats["excluded"] += 1
        return None
    counts = None
    if d.bounds:  # exact counts only when a bound needs them before selection
        counts = d.counts.get(cell, key)
        exact = {"params": counts[0] / 1e6, "flops": counts[1] / 1e6}
        if not all(t.admits(exact[t.attribute]) for t in d.bounds):
            stats["outside_bounds"] += 1
            return None
    return _Candidate(cell, key, repaired, latent, in_seed, counts)


# -- step 7: select ---------------------------------------------------------------------------
def _select(d: _Draw, kept: list[_Candidate], targets: Mapping[str, Target], c_std: torch.Tensor, n: int,
            oversample: float) -> tuple[list[_Candidate], dict[str, np.ndarray]]:
    """The ``n`` candidates closest to the condition, closest first (ties keep the draw order),
    with their predicted attributes (module doc, step 7)."""
    vae, conds = d.model.vae, d.model.conditions
    pred = vae.predict([k.cell for k in kept], members=True)  # (decoded members of the space)
    cand = np.stack([np.asarray(pred[a], dtype=np.float64) for a in conds.names], 1)  # [K, A]
    if d.counts.skeleton == "nb201":  # exact params/FLOPs: closed forms
        for j, a in enumerate(conds.names):
            if a in COUNT_ATTRIBUTES:
                col = COUNT_ATTRIBUTES.index(a)
                cand[:, j] = [(k.counts or d.counts.get(k.cell, k.network_code))[col] / 1e6 for k in kept]
    gap = (conds.to_flow(torch.from_numpy(cand)) - c_std[None]).numpy()  # [K, A]
    for j, a in enumerate(conds.names):
        t = targets.get(a)
        if t is not None and t.kind == "at_most":
            gap[:, j] = np.maximum(gap[:, j], 0.0)
        elif t is not None and t.kind == "at_least":
            gap[:, j] = np.minimum(gap[:, j], 0.0)
    dist = (gap ** 2).sum(1)  # [K]
    order = np.argsort(dist, kind="stable")[:n] if oversample > 1 else np.arange(len(kept))  # 1: draw order
    return [kept[i] for i in order], {a: np.asarray(v)[order] for a, v in pred.items()}


def _results(d: _Draw, kept: list[_Candidate], pred: dict[str, np.ndarray]) -> list[SampledCell]:
    """The selected candidates as :class:`SampledCell` (exact counts, seed-space membership, NB201
    strings and NB101 fingerprints filled in)."""
    # NB101 fingerprints of the cells with NB101 ops, natively in one batch
    nb101_rows = [i for i, k in enumerate(kept) if all(o in NB101_OPS for o in k.cell.ops[1:-1])]
    nb101_hashes = dict(zip(nb101_rows, dag_nb101_hash(*batch_from_cells(
        [kept[i].cell.pruned() for i in nb101_rows], MAX_NODES, nb101_labels=True)))) if nb101_rows else {}
    d.counts.fill({k.network_code: k.cell for k in kept if k.counts is None})
    out: list[SampledCell] = []
    for i, k in enumerate(kept):
        in_seed = k.in_seed_space
        if in_seed is None and d.seed_space is not None:
            in_seed = d.seed_space.contains(k.cell)
        params, flops = k.counts if k.counts is not None else d.counts.get(k.cell, k.network_code)
        nb201_str = k.cell.to_nb201() if all(o in NB201_NODE_OPS for o in k.cell.ops[1:-1]) else None
        out.append(SampledCell(cell=k.cell, code=k.cell.canonical_code(), network_code=k.network_code,
                               in_seed_space=in_seed, nb201=nb201_str, nb101_hash=nb101_hashes.get(i),
                               predicted={a: float(v[i]) for a, v in pred.items()}, params=int(params),
                               flops=int(flops), latent=k.latent.tolist(), repaired=k.repaired))
    return out


# -- the entry points -------------------------------------------------------------------------
def sample_with_info(reference: Any, condition: Mapping[str, Any] | None = None, n: int = 20,
                     space: str | DesignSpace = "nb201-like", temperature: float = 1.0, seed: int = 0,
                     novel_only: bool = False, device: str | torch.device = "cpu",
                     model: str | os.PathLike | SamplingModel | None = None, *, chunk: int = DEFAULT_CHUNK,
                     max_draws: int | None = None, oversample: float = DEFAULT_OVERSAMPLE,
                     progress: bool | None = None,
                     exclude: Callable[[Cell], bool] | None = None) -> tuple[list[SampledCell], dict[str, Any]]:
    """:func:`sample`, plus a dict describing the run: the reference, its predicted attributes,
    the condition targets, and how many latents were drawn, repaired, dropped (and why)."""
    _check_args(n, temperature, seed, novel_only, chunk, max_draws, oversample)
    check_device(device)
    sp = get_space(space)
    seed_space = _seed_space(sp, novel_only)
    ref = resolve_reference(reference, sp)
    m = resolve_model(model, sp, device)
    targets = parse_condition(condition, m.conditions.names)
    ref_pred = {k: float(v[0]) for k, v in m.vae.predict([ref]).items()}
    c_std = condition_vector(m.conditions, targets, ref_pred)  # [A]
    p = m.flow
    bounds = [t for t in targets.values() if t.attribute in COUNT_ATTRIBUTES and t.kind in ("at_most", "at_least")]
    if exclude is not None and not callable(exclude):
        raise ValueError(f"exclude must be None or a function cell -> bool, got {type(exclude).__name__}")
    d = _Draw(m, c_std[None].to(p.device, p.dtype), seed_space, novel_only, bounds, ExactCounts(sp.skeleton), exclude)
    _refuse_impossible_bounds(bounds, sp, d.counts)  # (the space's facts first: the more exact message)
    _refuse_uncovered_targets(m.conditions, targets, c_std)
    limit = max_draws if max_draws is not None else math.ceil(max(100 * n, 10 * chunk) / chunk) * chunk

    m.vae.model.eval()
    want = max(n, math.ceil(oversample * n - 1e-9))  # candidates gathered before selecting n
    gen = torch.Generator().manual_seed(seed)  # CPU: the same noise on every device
    # (delay: a bar only for work long enough to wait on; None: only when stderr is a terminal)
    with tqdm(total=want, desc="sample", unit="cell", file=sys.stderr, leave=False, delay=PROGRESS_DELAY,
              disable=None if progress is None else not progress) as bar:
        kept, stats = _gather(d, gen, temperature, chunk, limit, n, want, bar)
        if len(kept) < n:
            why = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in stats.items()
                            if k not in ("drawn", "rounds", "examined", "repaired") and v)
            cond = ", ".join(t.describe() for t in targets.values()) or "the reference's own attributes"
            raise SamplingError(f"found {len(kept)} of {n} distinct valid cells after drawing {stats['drawn']} "
                                f"latents in {stats['rounds']} rounds ({why or 'nothing dropped'}) under {cond}; "
                                f"loosen the condition, raise the temperature, or ask for fewer cells", found=len(kept))
        stats["candidates"] = len(kept)
        bar.set_postfix_str("selecting", refresh=False)
        chosen, pred = _select(d, kept, targets, c_std, n, oversample)
        results = _results(d, chosen, pred)
    raw = m.conditions.from_flow(c_std[None])[0].tolist()
    info = {"space": sp.name, "seed_space": sp.seed_space, "reference": ref, "reference_predicted": ref_pred,
            "reference_nb201": ref.to_nb201() if sp.seed_space == "nb201" else None,
            "targets": dict(zip(m.conditions.names, raw)), "condition": targets,
            "model": str(m.directory) if m.directory is not None else None, **stats}
    return results, info


def sample(reference: Any, condition: Mapping[str, Any] | None = None, n: int = 20,
           space: str | DesignSpace = "nb201-like", temperature: float = 1.0, seed: int = 0,
           novel_only: bool = False, device: str | torch.device = "cpu",
           model: str | os.PathLike | SamplingModel | None = None, *, chunk: int = DEFAULT_CHUNK,
           max_draws: int | None = None, oversample: float = DEFAULT_OVERSAMPLE,
           progress: bool | None = None, exclude: Callable[[Cell], bool] | None = None) -> list[SampledCell]:
    """``n`` distinct new cells around ``reference`` under ``condition``
    (:mod:`cgnf_fast.sampling.sampler` describes each step).

    Args:
        reference: a :class:`Cell`, an NB201 string, an NB101 ``(matrix, ops)`` pair, or
            ``"best"`` (``BEST_NB201`` / ``BEST_NB101`` for the space's family).
        condition: attribute -> value (:func:`~cgnf_fast.sampling.parse_condition`: ``12.5``,
            ``"+10%"``, ``"<=0.8M"``); attributes not given follow the given ones from the
            reference's predicted values. None: the reference's own predicted attributes.
        n: number of distinct cells (by network code) to return.
        space: the design space (a name or a :class:`DesignSpace`); the model must be for it.
        temperature: standard deviation of the flow's base noise (1 = the trained distribution).
        seed: the noise seed; same arguments and seed -> same cells.
        novel_only: drop cells inside the seed space (NB201 for nb201-like, NB101 for nb101-like).
        device: where the G-VAE and the flow are loaded and run (a loaded :class:`SamplingModel`
            stays where it is).
        model: a model directory (``gvae/`` + ``flow/``, :mod:`cgnf_fast.sampling.model`), a
            loaded :class:`SamplingModel`, or None for the installed pretrained default.
        chunk: latents per round.
        max_draws: latents drawn at most before :class:`SamplingError` (default
            ``max(100 n, 10 chunk)`` rounded up to whole chunks).
        oversample: distinct valid candidates gathered per returned cell; the ``n`` whose
            predicted attributes are closest to the condition are returned (1: the first ``n``
            drawn, in draw order).
        progress: a bar on stderr over the cells gathered, shown once a call has run for a
            second (None: only when stderr is a terminal).
        exclude: a function ``cell -> bool``; cells for which it is true are dropped like
            ``novel_only``'s (e.g. a seed space of your own).

    Returns:
        ``n`` :class:`SampledCell`, closest to the condition first.
    """
    return sample_with_info(reference, condition, n, space, temperature, seed, novel_only, device, model,
                            chunk=chunk, max_draws=max_draws, oversample=oversample, progress=progress,
                            exclude=exclude)[0]


def aim_condition(reference: Any, cells: Sequence[Any], values: Sequence[float], *, step: float = 1.0,
                  space: str | DesignSpace = "nb201-like", model: str | os.PathLike | SamplingModel | None = None,
                  device: str | torch.device = "cpu", members: bool = False) -> dict[str, float]:
    """A ``condition`` for :func:`sample` that asks for cells better than ``reference`` by your
    own measurements: the reference's predicted attributes moved ``step`` standard deviations (of
    the flow's training conditions) along the ridge-regression direction of ``values`` (larger is
    better) on the predicted attributes of ``cells`` (cells you measured, e.g. a seed space's).
    ``members``: ``reference`` and ``cells`` are :class:`Cell` s known to be in the space, read as
    they are (no pruning), as :meth:`GraphVAE.predict` ``members=True`` reads them.

    ``cgnf evaluate beyond`` measured it (as "aimed", ``step=1``): it helped on one of four
    seed spaces and hurt on three, so :func:`sample` does not aim by default (docs/results.md).

    Returns attribute -> value (store units), for ``sample(reference, condition=...)``.
    """
    if isinstance(cells, (str, bytes)) or not isinstance(cells, Sequence) or len(cells) < 2:
        raise ValueError("cells must be a list of at least 2 cells (the measured ones)")
    y = np.asarray(values, dtype=np.float64)
    if y.shape != (len(cells),) or not np.isfinite(y).all():
        raise ValueError(f"values must be {len(cells)} finite numbers, one per cell; got {len(y)} values")
    if not isinstance(step, (int, float)) or isinstance(step, bool) or not math.isfinite(step):
        raise ValueError(f"step must be a finite number, got {step!r}")
    sp = get_space(space)
    m = resolve_model(model, sp, device)
    if members:
        if not isinstance(reference, Cell) or not all(isinstance(c, Cell) for c in cells):
            raise ValueError("members=True takes the reference and the cells as Cell objects")
        ref = reference
    else:
        ref = resolve_reference(reference, sp)
        cells = [c if isinstance(c, Cell) else resolve_reference(c, sp) for c in cells]
    names = m.conditions.names
    pred = m.vae.predict(list(cells), members=members)
    raw = torch.tensor(np.stack([np.asarray(pred[a], dtype=np.float64) for a in names], 1))
    ref_pred = m.vae.predict([ref], members=members)
    c_ref = m.conditions.to_flow(torch.tensor([[float(ref_pred[a][0]) for a in names]])).double()[0]
    target = ridge_step(m.conditions.to_flow(raw).double(), torch.from_numpy(y), c_ref, float(step))
    return dict(zip(names, m.conditions.from_flow(target[None])[0].tolist()))
