"""Conditions: what a user asks for (:class:`Target`, :func:`parse_condition`) and how the
flow sees it (:class:`FlowConditions`: raw attribute values <-> the standardised condition
vector ``c``).

Units in conditions: ZC proxies in the score store's units (synflow is a log there); params
and FLOPs in millions, or with a suffix ``K``/``M``/``G`` (``800K`` = ``0.8M`` = ``0.8``).
Relative changes move away from the reference's predicted value by ``|value| * pct``, so
``+10%`` always asks for more, also for a negative score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

__all__ = ["COUNT_ATTRIBUTES", "FlowConditions", "LOG_ATTRIBUTES", "LOG_FLOOR", "Target", "condition_vector",
           "parse_condition", "parse_condition_args"]

#: Attributes that are counts (store units: millions) and accept K/M/G suffixes and bounds as filters.
COUNT_ATTRIBUTES = ("params", "flops")
_SUFFIX = {"K": 1e-3, "k": 1e-3, "M": 1.0, "G": 1e3}  # -> millions ("m" is refused: milli or mega?)
#: A bare params/FLOPs value at or above this (in millions) is taken for a raw count written without a suffix.
_MAX_BARE_MILLIONS = 1e5
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RE_BOUND = re.compile(rf"^(<=|>=)\s*([+-]?{_NUM})\s*([A-Za-z]?)$")
_RE_RELATIVE = re.compile(rf"^([+-])\s*({_NUM})\s*%$")
_RE_ABSOLUTE = re.compile(rf"^([+-]?{_NUM})\s*([A-Za-z]?)$")
#: Attributes conditioned on as ``log(max(x, LOG_FLOOR))`` (store units: millions).
LOG_ATTRIBUTES = COUNT_ATTRIBUTES
#: Floor before the log of params / FLOPs (in millions: 100 parameters or FLOPs).
LOG_FLOOR = 1e-4
TRANSFORMS = ("identity", "log")
#: Ridge on the given attributes' correlation matrix in :meth:`FlowConditions.follow`.
FOLLOW_RIDGE = 0.05
#: Largest shift (in stds) :meth:`FlowConditions.follow` applies to an unspecified attribute.
FOLLOW_MAX_SHIFT = 3.0


# -- what the user asks for -------------------------------------------------------------------
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
        """``params<=0.8M``, ``synflow+10%``, ``nwot=210``: with the unit (M) of counts."""
        ops = {"at_most": "<=", "at_least": ">="}
        unit = "M" if self.attribute in COUNT_ATTRIBUTES else ""
        if self.kind in ops:
            return f"{self.attribute}{ops[self.kind]}{self.value:g}{unit}"
        if self.kind == "relative":
            return f"{self.attribute}{self.value * 100:+g}%"
        return f"{self.attribute}={self.value:g}{unit}"


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



def condition_vector(conditions: FlowConditions, targets: Mapping[str, Target],
                     reference: Mapping[str, float]) -> torch.Tensor:
    """The flow's condition ``c [A]`` (standardised, float64) for ``targets`` around the
    reference's predicted attributes ``reference`` (store units): each targeted attribute at its
    target (:meth:`Target.target`), every other one moved with them as they co-vary over the
    flow's training cells (:meth:`FlowConditions.follow`)."""
    row = [float(reference[a]) for a in conditions.names]
    c_ref = conditions.to_flow(torch.tensor([row], dtype=torch.float64))[0]  # [A]
    given: dict[int, float] = {}
    for i, a in enumerate(conditions.names):
        t = targets.get(a)
        if t is None:
            continue
        v = t.target(row[i])
        if not math.isfinite(v):
            raise ValueError(f"condition {a!r}: the target {v!r} is not a finite number")
        moved = list(row)
        moved[i] = v
        given[i] = float(conditions.to_flow(torch.tensor([moved], dtype=torch.float64))[0, i])
    return conditions.follow(c_ref, given)


# -- the flow's condition vector ----------------------------------------------------------
@dataclass
class FlowConditions:
    """The map from raw attribute values (store units) to the flow's condition vector ``c``.

    ``c[:, i] = (t_i(x[:, i]) - mean[i]) / std[i]`` with ``t_i`` the identity or
    ``log(max(x, log_floor))``.

    Shapes:
        raw [B, A] (A = ``len(names)``, the attribute order of ``names``) <-> c [B, A]
    """

    names: list[str]
    transforms: list[str]
    mean: list[float]
    std: list[float]
    log_floor: float = LOG_FLOOR
    #: correlation matrix [A][A] of the standardised training conditions (None in flows trained
    #: before it was recorded); sampling moves unspecified attributes with the specified ones by it
    corr: list[list[float]] | None = None

    def __post_init__(self) -> None:
        n = len(self.names)
        if n == 0 or len(set(self.names)) != n:
            raise ValueError(f"conditions need at least one attribute and no duplicates, got {self.names!r}")
        if not (len(self.transforms) == len(self.mean) == len(self.std) == n):
            raise ValueError(f"conditions: names, transforms, mean and std must have the same length, got "
                             f"{n}, {len(self.transforms)}, {len(self.mean)}, {len(self.std)}")
        bad = [t for t in self.transforms if t not in TRANSFORMS]
        if bad:
            raise ValueError(f"condition transforms must be one of {TRANSFORMS}, got {bad}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in self.mean):
            raise ValueError(f"condition means must be finite numbers, got {self.mean}")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in self.std):
            raise ValueError(f"condition stds must be finite numbers > 0, got {self.std}")
        if not (isinstance(self.log_floor, (int, float)) and self.log_floor > 0):
            raise ValueError(f"log_floor must be > 0, got {self.log_floor!r}")
        if self.corr is not None:
            c = np.asarray(self.corr, dtype=np.float64)
            if c.shape != (n, n) or not np.isfinite(c).all() or not np.allclose(c, c.T) \
                    or not np.allclose(np.diag(c), 1.0) or np.abs(c).max() > 1 + 1e-9:
                raise ValueError(f"corr must be a symmetric {n}x{n} correlation matrix (unit diagonal, entries in "
                                 f"[-1, 1]), got {self.corr!r}")

    @staticmethod
    def transform_for(name: str) -> str:
        return "log" if name in LOG_ATTRIBUTES else "identity"

    @classmethod
    def fit(cls, names: Sequence[str], raw: torch.Tensor | np.ndarray) -> FlowConditions:
        """Transforms by name and mean/std of the transformed ``raw [M, A]`` (float64)."""
        names = list(names)
        tf = [cls.transform_for(n) for n in names]
        probe = cls(names, tf, [0.0] * len(names), [1.0] * len(names))
        t = probe.transform(raw)
        if t.shape[0] < 2:
            raise ValueError(f"need at least 2 rows to standardise conditions, got {t.shape[0]}")
        mean = t.mean(0)
        std = t.std(0)
        # a constant condition: keep std 1 (the standardised column is then all zeros)
        std = torch.where(std > 1e-8 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
        u = ((t - mean) / std).numpy()  # [M, A] standardised
        cov = u.T @ u / (u.shape[0] - 1)
        d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
        corr = np.clip(cov / np.outer(d, d), -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
        corr[~np.isfinite(corr)] = 0.0
        return cls(names, tf, [float(v) for v in mean], [float(v) for v in std],
                   corr=[[float(x) for x in row] for row in corr])

    def follow(self, c_ref: torch.Tensor | np.ndarray, given: dict[int, float]) -> torch.Tensor:
        """The flow condition for targets ``given`` (column -> standardised value) with every
        other column moved from the reference ``c_ref [A]`` by the Gaussian conditional mean
        ``corr[U, S] (corr[S, S] + lambda I)^-1 (c_S - c_ref_S)`` (ridge ``lambda`` =
        :data:`FOLLOW_RIDGE`, each shift clipped to +-:data:`FOLLOW_MAX_SHIFT` stds): unspecified
        attributes change as they co-vary with the specified ones over the training cells
        (without ``corr``: they stay).

        Shapes:
            c_ref [A] -> [A] float64
        """
        c = torch.as_tensor(np.asarray(c_ref, dtype=np.float64)).clone().reshape(-1)
        if c.numel() != len(self.names):
            raise ValueError(f"c_ref must have {len(self.names)} entries, got {c.numel()}")
        S = sorted(given)
        if not S:
            return c
        delta = np.array([given[i] - float(c[i]) for i in S])
        U = [i for i in range(len(self.names)) if i not in given]
        if self.corr is not None and U:
            R = np.asarray(self.corr, dtype=np.float64)
            # ridge (FOLLOW_RIDGE): two near-collinear given attributes (params and FLOPs correlate at
            # ~0.998) asked apart would otherwise push the others far outside the training range
            R_SS = R[np.ix_(S, S)] + FOLLOW_RIDGE * np.eye(len(S))
            shift = R[np.ix_(U, S)] @ np.linalg.solve(R_SS, delta)
            shift = np.clip(shift, -FOLLOW_MAX_SHIFT, FOLLOW_MAX_SHIFT)
            for k, i in enumerate(U):
                c[i] += float(shift[k])
        for i in S:
            c[i] = given[i]
        return c

    def _check(self, x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
        if x.dim() != 2 or x.shape[1] != len(self.names):
            raise ValueError(f"{name} must have shape [B, {len(self.names)}] (columns {self.names}), "
                             f"got {list(x.shape)}")
        return x.to(torch.float64)

    def transform(self, raw: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``t(raw)`` (log for params/flops), float64 ``[B, A]``, before standardisation."""
        x = self._check(raw, "raw").clone()
        for i, t in enumerate(self.transforms):
            if t == "log":
                x[:, i] = torch.log(x[:, i].clamp_min(self.log_floor))
        return x

    def untransform(self, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = self._check(t, "t").clone()
        for i, tf in enumerate(self.transforms):
            if tf == "log":
                x[:, i] = torch.exp(x[:, i])
        return x

    def standardise(self, t: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = self._check(t, "t")
        return (x - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(self.std, dtype=torch.float64)

    def to_flow(self, raw: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw attribute values (store units) -> the flow's condition ``c`` (float64 ``[B, A]``)."""
        return self.standardise(self.transform(raw))

    def from_flow(self, c: torch.Tensor | np.ndarray) -> torch.Tensor:
        """The flow's condition ``c`` -> raw attribute values (float64 ``[B, A]``; params/flops
        come back as ``max(x, log_floor)``)."""
        x = self._check(c, "c")
        t = x * torch.tensor(self.std, dtype=torch.float64) + torch.tensor(self.mean, dtype=torch.float64)
        return self.untransform(t)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowConditions:
        if not isinstance(d, dict):
            raise ValueError(f"conditions must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        missing = sorted({"names", "transforms", "mean", "std"} - set(d))
        if unknown or missing:
            raise ValueError(f"conditions: unknown keys {unknown}, missing keys {missing}")
        return cls(**d)


def ridge_step(c: torch.Tensor, y: torch.Tensor, c_from: torch.Tensor, step: float) -> torch.Tensor:
    """``c_from [A]`` moved ``step`` along the unit ridge-regression direction (penalty 1) of the
    values ``y [n]`` on the conditions ``c [n, A]`` (in the flow's standardised condition space,
    so a step of 1 is one standard deviation of the training conditions)."""
    cc = c - c.mean(0)
    w = torch.linalg.solve(cc.T @ cc + torch.eye(c.shape[1], dtype=c.dtype), cc.T @ (y - y.mean()))
    return c_from + step * w / w.norm().clamp_min(1e-12)
