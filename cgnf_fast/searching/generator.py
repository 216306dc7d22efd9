"""``cgnf``: the generator in the loop.

Each network of the domain is described by zero-cost information only (nothing here has seen a
benchmark accuracy): its G-VAE latent (the nb201-like model's encoder, reduced by PCA to 8
components), its measured synflow and nwot (the shipped table, 16 embedded CIFAR-10 images)
and its exact parameter count. Each step:

1. **Start**: the first ``n_init`` queries are the networks ranked highest by zero-cost
   information (the mean of their synflow and nwot ranks).
2. **Aim**: a ridge regression of the results so far on the flow's conditions (the networks'
   predicted attributes, standardised) gives the direction in attribute space that the results
   favour; the target is the best network's conditions moved half a standard deviation along
   it.
3. **Propose**: the conditional flow draws latents at that target; each is mapped to the nearest
   unmeasured network of the domain in latent space. The 1-edit neighbours of the best few
   networks and a random sample of networks join them.
4. **Rank**: a Gaussian process on the measured networks (:mod:`.surrogate`) gives each
   candidate its expected improvement; the best are queried (``q`` at a time with batched
   queries).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np
import torch

from ..sampling.conditions import ridge_step as aimed_target  # the step of the module doc's step 2
from .baselines import Searcher, rank_mean
from .domain import NB201Domain
from .surrogate import GaussianProcess, expected_improvement

__all__ = ["GeneratorSearch", "nb201_features", "zc_table"]

#: The shipped measured zero-cost scores of every NB201 network (see ``model.json`` beside it).
ZC_RESOURCE = ("cgnf_fast.pretrained", "nb201/zc_nb201.npz")


@functools.lru_cache(maxsize=1)
def zc_table() -> dict[str, np.ndarray]:
    """``{"synflow": [classes], "nwot": [classes]}`` in the NB201 domain's class order, measured
    on the representative (lowest-index) string of each network (NaN where a proxy failed)."""
    from .domain import nb201_domain

    dom = nb201_domain()
    ref = resources.files(ZC_RESOURCE[0]).joinpath(ZC_RESOURCE[1])
    with ref.open("rb") as f:
        data = np.load(f)
        index = data["index"]
        out = {p: np.full(dom.num_classes, np.nan) for p in ("synflow", "nwot")}
        for p in out:
            out[p][dom.class_of[index]] = data[p]
    return out


@functools.lru_cache(maxsize=1)
def nb201_features() -> dict[str, Any]:
    """Per NB201 network (class order): GP features ``x [classes, 11]`` (standardised), the
    flow conditions ``c [classes, A]`` and the latents ``z [classes, D]`` (module doc)."""
    from ..nets import ExactCounts
    from ..sampling.model import SamplingModel, default_model_dir
    from .domain import nb201_domain

    dom = nb201_domain()
    model = SamplingModel.load(default_model_dir("nb201-like"))
    cells = [dom.cell(int(i)) for i in dom.representative]
    with torch.no_grad():
        z = model.vae.encode(cells).double()  # [K, D]
    pred = model.vae.predict(cells, members=True)
    raw = torch.tensor(np.stack([np.asarray(pred[a], dtype=np.float64) for a in model.conditions.names], 1))
    c = model.conditions.to_flow(raw)  # [K, A]
    zc = zc_table()
    counts = ExactCounts("nb201")
    params = np.asarray([counts.get(cell, cell.network_code())[0] for cell in cells], dtype=np.float64)
    mean, std, basis = latent_pca(z)
    pcs = ((z - mean) / std) @ basis
    cols = [pcs, *(torch.tensor(_finite(zc[p]))[:, None] for p in ("synflow", "nwot")),
            torch.tensor(np.log(np.maximum(params, 1.0)))[:, None]]
    x = torch.cat(cols, 1)
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-9)
    return {"x": x, "c": c.double(), "z": z, "model": model, "prior": rank_mean(zc["synflow"], zc["nwot"])}


def latent_pca(z: torch.Tensor, k: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean [D], std [D], basis [D, k])``: the first ``k`` principal directions of the
    standardised latents ``z [N, D]`` (features are ``((z - mean) / std) @ basis``)."""
    mean, std = z.mean(0), z.std(0).clamp_min(1e-9)
    _, _, v = torch.linalg.svd((z - mean) / std, full_matrices=False)
    return mean, std, v[:k].T


def _finite(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, np.nanmin(v))


class GeneratorSearch(Searcher):
    """The ``cgnf`` method (module doc) over the NB201 domain."""

    def __init__(self, domain: NB201Domain, seed: int, n_init: int = 5, draws: int = 64, neighbours_of: int = 3,
                 random_pool: int = 256, step: float = 0.5, use_flow: bool = True) -> None:
        super().__init__(domain, seed)
        f = nb201_features()
        self.x, self.c, self.z, self.model = f["x"], f["c"], f["z"], f["model"]
        self.prior_order = [int(k) for k in np.argsort(-f["prior"], kind="stable")]
        self.n_init, self.draws, self.neighbours_of = n_init, draws, neighbours_of
        self.random_pool, self.step, self.use_flow = random_pool, step, use_flow
        self.gp = GaussianProcess(self.x.shape[1])
        self.observed: dict[int, float] = {}  # class -> value
        self.asked: set[int] = set()  # classes asked (told or not)
        self.queue: list[int] = []
        self.generator = torch.Generator().manual_seed(seed)
        self.stats = {"from_flow": 0, "from_neighbours": 0, "from_random": 0, "from_prior": 0}
        self.source: dict[int, str] = {}  # candidate class -> where it came from (the last ranking)
        self.origin: dict[int, str] = {}  # asked class -> where it came from
        self._ranked_with = -1

    def ask(self) -> int:
        dom = self.domain
        if len(self.asked) < self.n_init or len(self.observed) < 2:  # (also while failures leave < 2 results)
            k = next((k for k in self.prior_order if k not in self.asked), None)
            if k is not None:
                return self._take(k, "from_prior")
        if not self.queue or self._ranked_with != len(self.observed):  # new results: rank again
            self.queue = self._rank()
            self._ranked_with = len(self.observed)
        while self.queue:
            k = self.queue.pop(0)
            if k not in self.asked:
                return self._take(k, self.source.get(k, "from_random"))
        rest = [k for k in self.rng.permutation(dom.num_classes).tolist() if k not in self.asked]
        return self._take(rest[0] if rest else int(self.rng.integers(dom.num_classes)), "from_random")

    def _take(self, k: int, source: str) -> int:
        self.stats[source] += 1
        self.origin[k] = source
        self.asked.add(k)
        return int(self.domain.representative[k])

    def source_of(self, item: int) -> str | None:
        """Where the query of ``item``'s network came from (``from_prior``, ``from_flow``,
        ``from_neighbours``, ``from_random``), or None when this searcher did not propose it."""
        return self.origin.get(self.domain.network(item))

    def tell(self, item: int, value: float | None) -> None:
        k = self.domain.network(item)
        self.asked.add(k)
        if value is not None:
            self.observed[k] = value

    def _candidates(self) -> dict[int, str]:
        dom = self.domain
        out: dict[int, str] = {}
        ranked = sorted(self.observed, key=self.observed.get, reverse=True)
        if self.use_flow and len(self.observed) >= 2:
            for k in self._flow_proposals(ranked[0]):
                out.setdefault(k, "from_flow")
        for k in ranked[: self.neighbours_of]:
            for item in dom.neighbours(int(dom.representative[k])):
                out.setdefault(dom.network(item), "from_neighbours")
        for k in self.rng.choice(dom.num_classes, size=min(self.random_pool, dom.num_classes), replace=False):
            out.setdefault(int(k), "from_random")
        return {k: v for k, v in out.items() if k not in self.asked}

    def _flow_proposals(self, best: int) -> list[int]:
        """Latents drawn at the aimed target, each mapped to its nearest unasked network."""
        ks = list(self.observed)
        y = torch.tensor([self.observed[k] for k in ks], dtype=torch.float64)
        target = aimed_target(self.c[ks], y, self.c[best], self.step)
        flow = self.model.flow
        noise = torch.randn((self.draws, flow.latent), generator=self.generator, dtype=torch.float64)
        with torch.no_grad():
            z = flow.sample(target[None].to(flow.device, flow.dtype).expand(self.draws, -1).contiguous(),
                            noise=noise.to(flow.device, flow.dtype)).double().cpu()
        d = torch.cdist(z, self.z)  # [draws, classes]
        if self.asked:
            d[:, sorted(self.asked)] = float("inf")
        return [int(k) for k in dict.fromkeys(d.argmin(1).tolist())]

    def _rank(self) -> list[int]:
        cand = self._candidates()
        if not cand:
            return []
        ks = list(self.observed)
        self.gp.fit(self.x[ks], torch.tensor([self.observed[k] for k in ks], dtype=torch.float64))
        keys = list(cand)
        mean, std = self.gp.posterior(self.x[keys])
        ei = expected_improvement(mean, std, max(self.observed.values()))
        order = torch.argsort(ei, descending=True, stable=True).tolist()
        self.source = cand
        return [keys[i] for i in order]

    def describe(self) -> dict[str, Any]:
        return dict(self.stats)


@functools.lru_cache(maxsize=4)
def _cell_model(space: str) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shipped model of a space and its latent PCA basis (``mean [D]``, ``std [D]``, ``basis
    [D, 8]``), fitted on 2,000 random members (seed 0)."""
    from ..sampling.model import SamplingModel, default_model_dir
    from ..space import get as get_space

    d = default_model_dir(space)
    if d is None:
        raise ValueError(f"cgnf search needs a model for space {space!r}; none ships (train one with cgnf pipeline)")
    model = SamplingModel.load(d)
    with torch.no_grad():
        z = model.vae.encode(get_space(space).sample(2000, seed=0)).double()
    return (model, *latent_pca(z))


class CellGeneratorSearch(Searcher):
    """``cgnf`` in a space whose networks cannot all be listed (nb201-like, nb101-like): the same
    loop as :class:`GeneratorSearch`, with candidates that exist only as the flow proposes them.
    Features are the latent's 8 principal components and the predicted attributes (the flow's
    conditions); the first ``n_init`` queries are the flow's draws at the attributes of the random
    member ranked highest by predicted synflow and nwot, ranked the same way (no benchmark
    accuracy enters, not even through the space's best-known cell)."""

    def __init__(self, domain: Any, seed: int, n_init: int = 5, draws: int = 64, neighbours_of: int = 3,
                 random_pool: int = 64, step: float = 0.5) -> None:
        super().__init__(domain, seed)
        self.model, self._mean, self._std, self._basis = _cell_model(domain.name)
        self.n_init, self.draws, self.neighbours_of = n_init, draws, neighbours_of
        self.random_pool, self.step = random_pool, step
        self.generator = torch.Generator().manual_seed(seed)
        self.gp = GaussianProcess(self._basis.shape[1] + len(self.model.conditions.names))
        self.cells: dict[int, Any] = {}  # network -> cell
        self.feats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # network -> (x, c)
        self.observed: dict[int, float] = {}
        self.asked: set[int] = set()
        self.origin: dict[int, str] = {}
        self.stats = {"from_flow": 0, "from_neighbours": 0, "from_random": 0, "from_prior": 0}
        # the start, from zero-cost information only: the flow's draws at the attributes of the
        # random member ranked highest by predicted synflow and nwot, ranked the same way
        pool = self._by_prior(self.domain.random(self.rng, 256))
        start = self._by_prior(self._flow_cells(self.feats[pool[0].network_code()][1], 256) + pool)
        self.queue = [(c, "from_prior") for c in start[:n_init]]
        self._ranked_with = -1

    def _by_prior(self, cells: list[Any]) -> list[Any]:
        """Distinct networks, highest mean rank of predicted synflow and nwot first."""
        cells = list({c.network_code(): c for c in cells}.values())
        self._featurise(cells)
        names = self.model.conditions.names
        pred = torch.stack([self.feats[c.network_code()][1] for c in cells])
        cols = [pred[:, names.index(p)].numpy() for p in ("synflow", "nwot") if p in names]
        order = np.argsort(-rank_mean(*cols), kind="stable") if cols else np.arange(len(cells))
        return [cells[i] for i in order]

    def _featurise(self, cells: list[Any]) -> None:
        new = [c for c in cells if c.network_code() not in self.feats]
        if not new:
            return
        m = self.model
        with torch.no_grad():
            z = m.vae.encode(new).double()
        pred = m.vae.predict(new, members=True)
        raw = torch.tensor(np.stack([np.asarray(pred[a], dtype=np.float64) for a in m.conditions.names], 1))
        c = m.conditions.to_flow(raw).double()
        x = torch.cat([((z - self._mean) / self._std) @ self._basis, c], 1)
        for cell, xi, ci in zip(new, x, c):
            self.feats[cell.network_code()] = (xi, ci)
            self.cells[cell.network_code()] = cell

    def _flow_cells(self, target: torch.Tensor, n: int) -> list[Any]:
        from ..sampling.rounds import draw_round

        _, decoded = draw_round(self.model, target[None].to(torch.float64), n, self.generator)
        out, seen = [], set()
        for cell, _ in decoded:
            if cell is None or cell.is_zero:
                continue
            p = cell.pruned()
            if p.network_code() not in seen and self.domain.space.contains(p):
                seen.add(p.network_code())
                out.append(p)
        return out

    def ask(self) -> Any:
        started = len(self.asked) >= self.n_init or not self.queue  # the first n_init come from the start queue
        if started and len(self.observed) >= 2 and (not self.queue or self._ranked_with != len(self.observed)):
            self.queue = self._rank()  # new results: rank again
            self._ranked_with = len(self.observed)
        while self.queue:
            cell, source = self.queue.pop(0)
            k = cell.network_code()
            if k not in self.asked:
                return self._take(cell, source)
        return self._take(self.domain.random_new(self.rng, self.asked), "from_random")

    def _take(self, cell: Any, source: str) -> Any:
        k = cell.network_code()
        self.stats[source] += 1
        self.origin[k] = source
        self.asked.add(k)
        return cell

    def source_of(self, item: Any) -> str | None:
        return self.origin.get(item.network_code())

    def tell(self, item: Any, value: float | None) -> None:
        k = item.network_code()
        self.asked.add(k)
        self._featurise([item])
        if value is not None:
            self.observed[k] = value

    def _rank(self) -> list[tuple[Any, str]]:
        ks = list(self.observed)
        y = torch.tensor([self.observed[k] for k in ks], dtype=torch.float64)
        best = max(ks, key=self.observed.get)
        target = aimed_target(torch.stack([self.feats[k][1] for k in ks]), y, self.feats[best][1], self.step)
        cand: dict[int, tuple[Any, str]] = {}
        for cell in self._flow_cells(target, self.draws):
            cand.setdefault(cell.network_code(), (cell, "from_flow"))
        for k in sorted(ks, key=self.observed.get, reverse=True)[: self.neighbours_of]:
            for cell in self.domain.neighbours(self.cells[k]):
                cand.setdefault(cell.network_code(), (cell, "from_neighbours"))
        for cell in self.domain.random(self.rng, self.random_pool):
            cand.setdefault(cell.network_code(), (cell, "from_random"))
        cand = {k: v for k, v in cand.items() if k not in self.asked}
        if not cand:
            return []
        self._featurise([v[0] for v in cand.values()])
        self.gp.fit(torch.stack([self.feats[k][0] for k in ks]), y)
        keys = list(cand)
        mean, std = self.gp.posterior(torch.stack([self.feats[k][0] for k in keys]))
        ei = expected_improvement(mean, std, float(y.max()))
        return [cand[keys[i]] for i in torch.argsort(ei, descending=True, stable=True).tolist()]

    def describe(self) -> dict[str, Any]:
        return dict(self.stats)
