"""The graph VAE: a GIN encoder over cells' dense adjacency, a per-graph Gaussian latent, an
MLP decoder back to a slot layout (see :mod:`cgnf_fast.models.codec`), and the attribute
predictor on the latent.

Latent: one vector per *graph* (``latent`` dims), not per node. The flow that navigates the
latent space and the attribute predictor both need one fixed-size vector per cell whatever its
vertex count, and a graph-level code makes "distance between two cells" (what the triplet loss
shapes) a plain vector distance. The encoder is exact-isomorphism aware: cells are laid out in
their canonical vertex order, so slot embeddings are a function of the cell, not of how it was
numbered, and they let the GIN tell apart graphs a plain WL-style GNN could not.

Encoder layer (``layers`` times, residual): ``h = h + relu(Linear(2H -> H)(gin_aggregate(adj, h)))``
where :func:`cgnf_fast.ops.gnn.gin_aggregate` sends messages along edges (summed with
``(1 + eps) * h``) and against edges, concatenated; ``backend="native"`` uses the fused C++/CUDA
kernel, ``"torch"`` its pure-PyTorch reference (identical results).
Readout: masked sum over present vertices, concatenated with the output vertex's state ->
MLP -> ``(mu, logvar)``.

Decoder: ``z`` -> MLP -> op logits for the op slots 1 .. N-2 (``absent`` or an op of the
space) and edge logits for every pair ``i < j`` of slots.

Attribute predictor (``predictor`` in the config):

* ``"graph"`` (the default for new runs): :class:`PathPredictor` on the *exact* graph. It is
  trained on the labelled cells' own slot layouts; a latent is predicted through its most
  likely decoded cell (argmax ops, edges with logit > 0, pruned: :func:`prune_layout`), so
  ``predict(z)`` is the prediction of ``decode(z)`` and a cell is predicted from its layout
  with no encoder or decoder pass (:meth:`GVAE.predict_layout_std`). The predictor has no
  parameter in common with the encoder or decoder and its loss reaches neither, so it does not
  shape the latent space (the reconstruction, KL and triplet losses do).
* ``"paths"``: the same :class:`PathPredictor` on the decoder's *soft* layout of ``z`` (op
  probabilities per slot, edge probabilities per pair; no gradient into the decoder); a cell
  is encoded and its latent decoded. Slower on cells (an encoder and a decoder pass) and a
  little less accurate; kept for the runs trained with it.
* ``"latent"`` (the models trained before both): an MLP on ``z``.

:class:`PathPredictor` turns a slot layout into features an MLP maps to the attributes: ``C``
learned *path gains* ``log sum over input->output paths of prod over the path's op vertices
of g[c, op]`` (one learned gain per channel and op, computed by one pass over the slots in
topological order), the count of each op and the edge count, and in NB101-skeleton spaces
``degree_features``. The path sums generalise NAS path encodings (every path's op sequence)
to a few learned channels; they are what makes the predictor extrapolate to cells no label
covers, such as NB201-like cells with one or two op vertices, which are all NB201 networks and
so never labelled when the seed space is held out (synflow, for one, is a path sum of products
of layer gains: linear in these features to ~0.1 % of its range).

Shapes:
    adj [B, N, N] float32, ops [B, N] int64, z [B, latent], attributes [B, A].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

BACKENDS = ("native", "torch")
PREDICTORS = ("graph", "paths", "latent")


@dataclass
class GVAEConfig:
    """Everything needed to rebuild a G-VAE (saved as JSON next to its weights).

    The architecture defaults (``hidden`` ... ``path_channels``) are the training config's too
    (:class:`cgnf_fast.train.gvae.TrainGVAEConfig` reads them from here). ``predictor`` and
    ``degree_features`` differ on purpose: their defaults here are what a ``gvae.json`` written
    before the field existed was built with (:meth:`from_dict` fills a missing key with its
    default), while new training runs take the training config's (``"graph"``; degree features
    on for NB101-skeleton spaces).
    """

    space: str
    num_nodes: int
    ops: list[str]
    hidden: int = 128
    layers: int = 4
    latent: int = 32
    dec_hidden: int = 512
    pred_hidden: int = 256
    attributes: list[str] = field(default_factory=list)
    eps: float = 0.0
    max_edges: int | None = None
    allow_zero: bool = True
    #: "graph" (path features of the exact / most likely decoded graph -> MLP), "paths" (of the
    #: decoder's soft graph) or "latent" (MLP on z); see the module doc
    predictor: str = "latent"
    path_channels: int = 16
    #: "graph"/"paths" also read degree features (output in-degree k and 1/k, 1/k^2, input out-degree,
    #: the ops feeding the output, op counts / k^2, input edges / k): NB101's channel split
    degree_features: bool = False

    def design_space(self):
        """The design space: a built-in one by name, else rebuilt from the stored definition."""
        from ..space import spaces

        spec = {"ops": list(self.ops), "max_nodes": self.num_nodes, "max_edges": self.max_edges,
                "allow_zero": self.allow_zero}
        return spaces.from_spec(self.space, None if self.space in spaces.names() else spec)

    @property
    def num_op_classes(self) -> int:
        return len(self.ops) + 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {self.predictor!r}")
        if isinstance(self.path_channels, bool) or not isinstance(self.path_channels, int) or self.path_channels < 1:
            raise ValueError(f"path_channels must be a positive int, got {self.path_channels!r}")
        if not isinstance(self.degree_features, bool):
            raise ValueError(f"degree_features must be a bool, got {self.degree_features!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GVAEConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown G-VAE config keys {unknown}")
        return cls(**d)


def _mlp(sizes: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        mods.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


class GINEncoder(nn.Module):
    def __init__(self, cfg: GVAEConfig) -> None:
        super().__init__()
        H, N = cfg.hidden, cfg.num_nodes
        self.eps = float(cfg.eps)
        self.op_embed = nn.Embedding(cfg.num_op_classes, H)
        self.pos_embed = nn.Embedding(N, H)
        self.lins = nn.ModuleList(nn.Linear(2 * H, H) for _ in range(cfg.layers))
        self.head = _mlp([2 * H, 2 * H, 2 * cfg.latent])
        self.register_buffer("slots", torch.arange(N), persistent=False)

    def forward(self, adj: torch.Tensor, ops: torch.Tensor, backend: str = "native") -> tuple[torch.Tensor, torch.Tensor]:
        from ..ops.gnn import gin_aggregate

        h = self.op_embed(ops) + self.pos_embed(self.slots)[None]  # [B, N, H]
        for lin in self.lins:
            h = h + F.relu(lin(gin_aggregate(adj, h, eps=self.eps, backend=backend)))
        present = (ops != 0).to(h.dtype)[..., None]  # [B, N, 1]
        g = torch.cat([(h * present).sum(1), h[:, -1]], dim=-1)  # [B, 2H]
        mu, logvar = self.head(g).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 8.0)


class MLPDecoder(nn.Module):
    def __init__(self, cfg: GVAEConfig) -> None:
        super().__init__()
        N = cfg.num_nodes
        self.N = N
        self.op_classes = len(cfg.ops) + 1  # absent + ops
        self.num_pairs = N * (N - 1) // 2
        D = cfg.dec_hidden
        self.net = _mlp([cfg.latent, D, D, D])
        self.op_out = nn.Linear(D, (N - 2) * self.op_classes)
        self.edge_out = nn.Linear(D, self.num_pairs)
        iu = torch.triu_indices(N, N, 1)
        self.register_buffer("iu", iu, persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(op_logits [B, N-2, K+1], edge_logits [B, N(N-1)/2])``."""
        h = F.relu(self.net(z))
        return self.op_out(h).view(-1, self.N - 2, self.op_classes), self.edge_out(h)


class AttributePredictor(nn.Module):
    """MLP from a latent to the (standardised) attribute vector (``predictor="latent"``)."""

    def __init__(self, cfg: GVAEConfig) -> None:
        super().__init__()
        A = max(len(cfg.attributes), 1)
        self.net = _mlp([cfg.latent, cfg.pred_hidden, cfg.pred_hidden, A])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class PathPredictor(nn.Module):
    """Attributes of a (soft) slot layout: learned path gains, op and edge counts -> MLP + linear.

    Input: ``op_probs [B, N-2, K+1]`` (slot 1 .. N-2: ``absent``, then the space's ops) and
    ``edge_probs [B, N(N-1)/2]`` (pairs ``i < j`` in ``triu_indices`` order); one-hot rows
    give a cell's exact features (:meth:`features_of_layout`).

    Feature ``c`` of the ``C`` path channels: ``log(eps + v[N-1])`` with ``v[0] = 1`` and
    ``v[j] = gain_c(j) * sum_{i<j} e[i, j] v[i]``, ``gain_c(j) = sum_k p[j, k] exp(a[c, k])``
    (absent slots have gain 0, the output slot 1): for a hard graph, the sum over input->output
    paths of the product of the gains of their op vertices.

    With ``degree_features`` (NB101-skeleton spaces), ``2K + 6`` more: the output's in-degree
    from op vertices ``k`` (at least 1), ``1/k``, ``1/k^2``, the input's out-degree, the
    input -> output edge, the count of each op among the vertices feeding the output, each op's
    count over ``k^2`` and the input's edges to op vertices over ``k``. NB101 concatenates the
    vertices feeding the output and splits the channels between them (``C/k`` each), so its
    sizes and scores follow these; the path gains alone erred 4 % on NB101.
    """

    EPS = 1e-6

    def __init__(self, cfg: GVAEConfig) -> None:
        super().__init__()
        K, C, N = len(cfg.ops), cfg.path_channels, cfg.num_nodes
        A = max(len(cfg.attributes), 1)
        self.N, self.K, self.C = N, K, C
        self.degrees = cfg.degree_features
        # log gains: spread around e^1 so the channels start different (the seed fixes them)
        self.log_gain = nn.Parameter(1.0 + 0.5 * torch.randn(C, K))
        F_ = C + K + 1 + (2 * K + 6 if self.degrees else 0)
        self.lin = nn.Linear(F_, A)
        self.mlp = nn.Sequential(nn.Linear(F_, cfg.pred_hidden), nn.Tanh(), nn.Linear(cfg.pred_hidden, cfg.pred_hidden),
                                 nn.Tanh(), nn.Linear(cfg.pred_hidden, A))
        iu = torch.triu_indices(N, N, 1)
        self.register_buffer("iu", iu, persistent=False)

    def features(self, op_probs: torch.Tensor, edge_probs: torch.Tensor) -> torch.Tensor:
        """``[B, C + K + 1 (+ 2K + 6)]``: log path sums, expected op counts, expected edge count
        (and the degree features)."""
        B, N = op_probs.shape[0], self.N
        e = op_probs.new_zeros(B, N, N)
        e[:, self.iu[0], self.iu[1]] = edge_probs
        gains = self.log_gain.clamp(-8.0, 8.0).exp()  # [C, K]
        g = torch.einsum("bsk,ck->bcs", op_probs[..., 1:], gains)  # [B, C, N-2]
        v = [op_probs.new_ones(B, self.C)]
        for j in range(1, N):
            acc = (e[:, :j, j, None] * torch.stack(v, 1)).sum(1)  # [B, C]
            v.append(acc * g[:, :, j - 1] if j < N - 1 else acc)
        paths = torch.log(v[-1] + self.EPS)
        ops_p = op_probs[..., 1:]  # [B, N-2, K]
        counts = ops_p.sum(1)
        parts = [paths, counts, edge_probs.sum(1, keepdim=True)]
        if self.degrees:
            feeds = e[:, 1:N - 1, N - 1]  # [B, N-2]
            k = feeds.sum(1, keepdim=True).clamp_min(1.0)
            in_ops = e[:, 0, 1:N - 1].sum(1, keepdim=True)
            parts += [k, 1.0 / k, 1.0 / k ** 2, in_ops + e[:, 0, N - 1:], e[:, 0, N - 1:],
                      (ops_p * feeds[..., None]).sum(1), counts / k ** 2, in_ops / k]
        return torch.cat(parts, dim=-1)

    def forward(self, op_probs: torch.Tensor, edge_probs: torch.Tensor) -> torch.Tensor:
        f = self.features(op_probs, edge_probs)
        return self.lin(f) + self.mlp(f)

    def features_of_layout(self, adj: torch.Tensor, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-hot ``(op_probs, edge_probs)`` of an exact slot layout (``adj [B, N, N]``, ``ops [B, N]``)."""
        op_probs = F.one_hot(ops[:, 1:-1], self.K + 3)[..., : self.K + 1].to(adj.dtype)
        return op_probs, adj[:, self.iu[0], self.iu[1]]


class GVAE(nn.Module):
    """Encoder + decoder + attribute predictor (one module, one checkpoint)."""

    def __init__(self, cfg: GVAEConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = GINEncoder(cfg)
        self.decoder = MLPDecoder(cfg)
        self.predictor = PathPredictor(cfg) if cfg.predictor in ("graph", "paths") else AttributePredictor(cfg)
        A = max(len(cfg.attributes), 1)
        # standardisation of attributes (set from the labelled training data)
        self.register_buffer("attr_mean", torch.zeros(A))
        self.register_buffer("attr_std", torch.ones(A))
        self.register_buffer("attr_max", torch.ones(A))  # max |value| in training: the error scale

    def encode(self, adj: torch.Tensor, ops: torch.Tensor, backend: str = "native") -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(adj, ops, backend)

    def decode_logits(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder(z)

    def predict_std(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised attribute predictions ``[B, A]`` of latents (``"graph"``: of the most
        likely decoded cell; ``"paths"``: of the decoded soft graph; no gradient into the decoder)."""
        if self.cfg.predictor == "graph":
            with torch.no_grad():
                adj, ops = prune_layout(*self.layout_from_logits(*self.decoder(z)))
            return self.predict_layout_std(adj, ops)
        if self.cfg.predictor == "paths":
            with torch.no_grad():
                op_logits, edge_logits = self.decoder(z)
            return self.predictor(op_logits.softmax(-1), edge_logits.sigmoid())
        return self.predictor(z)

    def predict_layout_std(self, adj: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """Standardised attribute predictions ``[B, A]`` of exact slot layouts (``"graph"`` only:
        the other predictors read latents; pruned layouts, as :class:`~cgnf_fast.models.codec.CellCodec` writes)."""
        if self.cfg.predictor != "graph":
            raise ValueError(f"a {self.cfg.predictor!r} predictor reads latents, not layouts")
        return self.predictor(*self.predictor.features_of_layout(adj, ops))

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Attribute predictions ``[B, A]`` in the units of the score store."""
        return self.predict_std(z) * self.attr_std + self.attr_mean

    def predict_layout(self, adj: torch.Tensor, ops: torch.Tensor) -> torch.Tensor:
        """:meth:`predict_layout_std` in the units of the score store."""
        return self.predict_layout_std(adj, ops) * self.attr_std + self.attr_mean

    def layout_from_logits(self, op_logits: torch.Tensor, edge_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Most likely slot layout ``(adj [B, N, N] float32, ops [B, N] int64)`` (slot 0 input, N-1 output)."""
        B, N = op_logits.shape[0], self.cfg.num_nodes
        K = len(self.cfg.ops)
        ops = torch.zeros(B, N, dtype=torch.long, device=op_logits.device)
        ops[:, 0], ops[:, -1] = K + 1, K + 2
        ops[:, 1:-1] = op_logits.argmax(-1)
        adj = torch.zeros(B, N, N, device=op_logits.device)
        adj[:, self.decoder.iu[0], self.decoder.iu[1]] = (edge_logits > 0).float()
        return adj, ops


def prune_layout(adj: torch.Tensor, ops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A slot layout without the vertices off every input -> output path (and their edges):
    what :class:`~cgnf_fast.models.codec.CellCodec` would write for the pruned cell, up to the
    order of the slots (which no :class:`PathPredictor` feature depends on). A layout without a
    path becomes the empty one (the zero cell). Absent slots (op 0) lose their edges first.

    Shapes: ``adj [B, N, N]`` (0/1, strictly upper triangular), ``ops [B, N]`` int64; returns the same.
    """
    N = adj.shape[-1]
    present = ops != 0
    present[:, 0] = present[:, -1] = True
    e = (adj > 0) & present[:, :, None] & present[:, None, :]
    fwd = [torch.ones_like(present[:, 0])]
    for j in range(1, N):  # reachable from the input
        fwd.append((e[:, :j, j] & torch.stack(fwd, 1)).any(1))
    bwd = [torch.ones_like(present[:, 0])]
    for j in range(N - 2, -1, -1):  # reaches the output (bwd[0] is slot N-1, bwd[-1] slot j)
        bwd.append((e[:, j, j + 1:] & torch.stack(bwd[::-1], 1)).any(1))
    keep = torch.stack(fwd, 1) & torch.stack(bwd[::-1], 1)  # [B, N]
    keep = keep & keep[:, -1:]  # no path: nothing is kept
    keep[:, 0] = keep[:, -1] = True
    e = e & keep[:, :, None] & keep[:, None, :]
    out_ops = torch.where(keep, ops, torch.zeros_like(ops))
    return e.to(adj.dtype), out_ops


def reconstruction_loss(model: GVAE, op_logits: torch.Tensor, edge_logits: torch.Tensor, adj: torch.Tensor,
                        ops: torch.Tensor) -> torch.Tensor:
    """Sum over slots of op cross-entropy plus sum over pairs of edge BCE, mean over the batch."""
    iu = model.decoder.iu
    target_edges = adj[:, iu[0], iu[1]]
    target_ops = ops[:, 1:-1]
    l_ops = F.cross_entropy(op_logits.reshape(-1, op_logits.shape[-1]), target_ops.reshape(-1), reduction="sum")
    l_edges = F.binary_cross_entropy_with_logits(edge_logits, target_edges, reduction="sum")
    return (l_ops + l_edges) / adj.shape[0]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dims, mean over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()


def mine_triplets(targets: torch.Tensor, generator: torch.Generator | None = None,
                  min_gap: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triplets (anchor, positive, negative) by ZC distance among ``targets [M, A]``.

    For each anchor two other labelled cells are drawn at random; the one closer to the anchor
    in (normalised) ZC space is the positive, the other the negative. Triplets whose two ZC
    distances differ by less than ``min_gap`` carry no order and are dropped. So every kept
    triplet asks the latent to order distances as the ZC scores do.
    """
    M = targets.shape[0]
    if M < 3:
        empty = torch.zeros(0, dtype=torch.long, device=targets.device)
        return empty, empty, empty
    dev = targets.device
    a = torch.arange(M, device=dev)
    x = (a + torch.randint(1, M, (M,), generator=generator, device="cpu").to(dev)) % M
    y = (a + torch.randint(1, M, (M,), generator=generator, device="cpu").to(dev)) % M
    dx = (targets[a] - targets[x]).norm(dim=-1)
    dy = (targets[a] - targets[y]).norm(dim=-1)
    keep = ((dx - dy).abs() >= min_gap) & (x != y)
    pos = torch.where(dx < dy, x, y)
    neg = torch.where(dx < dy, y, x)
    return a[keep], pos[keep], neg[keep]


def triplet_loss(mu: torch.Tensor, targets: torch.Tensor, margin: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Triplet-margin loss on latents ``mu [M, D]`` with triplets mined by ``targets [M, A]``:
    mean over triplets of ``max(0, |mu_a - mu_p| - |mu_a - mu_n| + margin)``."""
    a, p, n = mine_triplets(targets, generator)
    if a.numel() == 0:
        return mu.sum() * 0.0
    return F.triplet_margin_loss(mu[a], mu[p], mu[n], margin=margin)
