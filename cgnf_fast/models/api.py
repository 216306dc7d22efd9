"""``GraphVAE``: a trained G-VAE + attribute predictor behind a cell-level API.

    vae = GraphVAE.load("runs/gvae")           # gvae.safetensors + gvae.json
    z = vae.encode(cells)                      # [B, latent] posterior means
    cells = vae.decode(z)                      # most likely cells (pruned)
    attrs = vae.predict(cells)                 # {"synflow": array [B], ...}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..space import Cell
from ..io import CheckpointError, check_sha256, load_config, load_module, load_tensors
from .codec import CellCodec
from .decode import decode_logits
from .gvae import BACKENDS, GVAE, GVAEConfig

WEIGHTS = "gvae.safetensors"
CONFIG = "gvae.json"
FORMAT = "cgnf_fast.gvae"
#: The G-VAE directory format this install writes and reads (configs written before it was
#: recorded are version 1).
FORMAT_VERSION = 1


class GraphVAE:
    """A trained G-VAE for one design space (see :mod:`cgnf_fast.models.gvae`)."""

    def __init__(self, model: GVAE, *, device: str | torch.device = "cpu", backend: str = "native",
                 info: dict | None = None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.model = model.to(device).eval()
        self.cfg: GVAEConfig = model.cfg
        self.space = self.cfg.design_space()
        self.codec = CellCodec(self.space)
        self.device = torch.device(device)
        self.backend = backend
        self.info = info or {}

    @property
    def attributes(self) -> list[str]:
        return list(self.cfg.attributes)

    def training_labels(self) -> dict:
        """What the config records of the labels the model was trained on (``data.labelled``:
        data fingerprint, seed, proxy code version, holdout ...); ValueError when it records none."""
        lab = self.info.get("data", {}).get("labelled")
        if not lab:
            raise ValueError("the G-VAE's config does not say which labels it was trained on (data.labelled)")
        return lab

    @classmethod
    def load(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu", backend: str = "native") -> GraphVAE:
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such directory (expected {WEIGHTS} and {CONFIG} in it)")
        meta = load_config(d / CONFIG, FORMAT, FORMAT_VERSION, "G-VAE", default_version=1)
        try:
            cfg = GVAEConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{d / CONFIG}: bad G-VAE config ({e})") from None
        try:
            cfg.design_space()
        except ValueError as e:
            raise CheckpointError(f"{d / CONFIG}: {e}") from None
        try:
            model = GVAE(cfg)
        except (TypeError, ValueError, RuntimeError) as e:  # e.g. a size that is not an int
            raise CheckpointError(f"{d / CONFIG}: bad G-VAE config ({e})") from None
        if "weights_sha256" in meta:  # (runs trained before it was recorded are checked by a model.json)
            check_sha256(d / WEIGHTS, str(meta["weights_sha256"]), str(d / CONFIG))
        tensors, _ = load_tensors(d / WEIGHTS)
        load_module(model, tensors, str(d / WEIGHTS))
        return cls(model, device=device, backend=backend, info=meta)

    # -- cells <-> latents ----------------------------------------------------------------
    def _tensors(self, cells: Sequence[Cell], members: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(cells, Cell):
            raise ValueError("pass a list of cells (got a single Cell)")
        pruned = []
        for i, c in enumerate(cells):
            if not isinstance(c, Cell):
                raise ValueError(f"cells[{i}] is a {type(c).__name__}, expected a Cell")
            if members:  # known members (the codec still checks ops and size)
                pruned.append(c)
                continue
            try:
                pruned.append(self.space.validate(c))
            except ValueError as e:
                raise ValueError(f"cells[{i}] is not in space {self.space.name!r}: {e}") from None
        adj, ops = self.codec.encode(pruned)
        return adj.to(self.device), ops.to(self.device)

    @torch.no_grad()
    def encode(self, cells: Sequence[Cell], batch_size: int = 4096) -> torch.Tensor:
        """Posterior means ``z [B, latent]`` (float32, on the model's device)."""
        cells = list(cells)
        out = []
        for i in range(0, len(cells), batch_size):
            adj, ops = self._tensors(cells[i:i + batch_size])
            mu, _ = self.model.encode(adj, ops, self.backend)
            out.append(mu)
        return torch.cat(out) if out else torch.zeros(0, self.cfg.latent, device=self.device)

    def _check_z(self, z: torch.Tensor | np.ndarray) -> torch.Tensor:
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        if z.dim() != 2 or z.shape[1] != self.cfg.latent:
            raise ValueError(f"z must have shape [B, {self.cfg.latent}], got {list(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("z has non-finite entries")
        return z

    @torch.no_grad()
    def decode(self, z: torch.Tensor | np.ndarray, *, repair: bool = True) -> list[Cell | None]:
        """The cell of each latent: its most likely layout, pruned, repaired into a member of the
        space where it is not one (:mod:`cgnf_fast.models.decode`, the decoder sampling uses;
        None where no repair makes a member). ``repair=False``: the most likely layout as the
        decoder gives it (pruned; the zero cell when nothing connects), member or not."""
        z = self._check_z(z)
        op_logits, edge_logits = self.model.decode_logits(z)
        if repair:
            return [cell for cell, _ in decode_logits(op_logits, edge_logits, self.codec)]
        adj, ops = self.model.layout_from_logits(op_logits, edge_logits)
        return self.codec.decode(adj, ops)

    @torch.no_grad()
    def predict(self, cells_or_z: Sequence[Cell] | torch.Tensor | np.ndarray,
                batch_size: int = 4096, *, members: bool = False) -> dict[str, np.ndarray]:
        """Predicted attributes (units of the score store) of cells or latents: name -> ``[B]``.

        With the ``"graph"`` predictor a cell is predicted from its own graph and a latent from
        its decoded cell (so ``predict(z) == predict(decode(z))``); the others encode cells.
        ``members=True`` skips the check that each cell is a member of the space (for cells
        that are known to be, such as the sampler's; a wrong one gives a wrong prediction)."""
        if isinstance(cells_or_z, (torch.Tensor, np.ndarray)):
            p = self.model.predict(self._check_z(cells_or_z))
        elif self.cfg.predictor == "graph":  # the cells' own layouts: no encoder or decoder pass
            cells = list(cells_or_z)
            parts = []
            for i in range(0, len(cells), batch_size):
                adj, ops = self._tensors(cells[i:i + batch_size], members)
                parts.append(self.model.predict_layout(adj, ops))
            p = torch.cat(parts) if parts else torch.zeros(0, len(self.cfg.attributes))
        else:
            p = self.model.predict(self.encode(list(cells_or_z)))
        p = p.double().cpu().numpy()
        return {a: p[:, i] for i, a in enumerate(self.cfg.attributes)}
