"""Pure PyTorch reference of the CNF dynamics (mirrored natively by ``cgnf_fast.ops.cnf``).

:func:`cnf_dynamics` is the math of :class:`cgnf_fast.models.flow.ODEDynamics` written as a
function of its weights: ConcatSquash layers ``latent -> *hidden -> latent``, each

    out = (W x + b) * sigmoid(G ctx + g) + H ctx,     ctx = [t, c]  (time first),

an activation (tanh or softplus) between layers and none after the last one, and optionally the
divergence ``tr(df/dz)`` computed by forward-mode tangents
``J_k = diag(act'(pre_k) * gate_k) W_k J_{k-1}`` (exact: ``J_0 = I``; Hutchinson: one probe,
``noise^T J noise``). ``ODEDynamics`` with ``backend="torch"`` calls this function, so it is the
one definition of the flow's dynamics. Stock ``F.linear``/``tanh``/``softplus``/``sigmoid``, so
autograd differentiates it to any order (the native op's backward recomputes it); no validation
(the op wrapper and the model validate).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

#: One ConcatSquash layer's weights: ``(W [out, in], b [out], G [out, 1 + C], g [out], H [out, 1 + C])``.
LayerWeights = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def cnf_dynamics(
    t: float | torch.Tensor,
    z: torch.Tensor,
    c: torch.Tensor,
    weights: Sequence[LayerWeights],
    activation: str = "tanh",
    divergence: str | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dz/dt, div)`` of the ConcatSquash MLP. Mirrors ``cgnf_fast.ops.cnf.cnf_dynamics``
    (native op ``cgnf_fast::cnf_dynamics``).

    Shapes:
        t      scalar: a float, or a 0-d / one-element tensor
        z      [B, D]
        c      [B, C]                (C may be 0)
        weights  per layer ``(W [out, in], b [out], G [out, 1 + C], g [out], H [out, 1 + C])``,
               widths ``D -> h_1 -> ... -> D``
        noise  [B, D]                (``divergence="hutchinson"`` only)
        -> dz/dt [B, D], div [B] (``None`` when ``divergence`` is None)

    Args:
        activation: ``"tanh"`` or ``"softplus"`` (between layers; none after the last).
        divergence: None (dz/dt alone), ``"exact"`` (``tr(df/dz)``) or ``"hutchinson"``
            (``noise^T (df/dz) noise``).
    """
    B = z.shape[0]
    t_col = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(1, 1).expand(B, 1)  # [B, 1]
    ctx = torch.cat([t_col, c], dim=1)  # [B, 1 + C]
    h = z  # [B, width]
    # Forward-mode tangents: row k of tan[b] is d h / d z applied to probe vector k, laid out
    # [B, K, width] so each layer is one GEMM over B*K rows. None = the identity (exact,
    # before the first layer); K = latent (exact) or 1 (Hutchinson, the probe is the noise).
    tan = noise.unsqueeze(1) if divergence == "hutchinson" else None
    last = len(weights) - 1
    for i, (W, b, G, g, H) in enumerate(weights):
        gate = torch.sigmoid(F.linear(ctx, G, g))  # [B, out]
        pre = F.linear(h, W, b) * gate + F.linear(ctx, H)  # [B, out]
        if i == last:
            if divergence is None:
                return pre, None
            if tan is None:  # exact, a single layer: J = diag(gate) W
                div = (gate * torch.diagonal(W)).sum(-1)
            elif divergence == "exact":  # tr(diag(gate) W T) = sum_i gate_i sum_k W_ik tan_ik
                div = (gate * (tan * W).sum(-1)).sum(-1)
            else:  # e^T diag(gate) W (T e), T e = tan[:, 0]
                div = (noise * gate * (tan[:, 0] @ W.t())).sum(-1)
            return pre, div
        if activation == "tanh":
            h = torch.tanh(pre)
            dact = 1.0 - h * h
        else:
            h = F.softplus(pre)
            dact = torch.sigmoid(pre)
        if divergence is not None:
            scale = (dact * gate).unsqueeze(1)  # [B, 1, out]
            tan = scale * (W.t() if tan is None else tan @ W.t())  # [B, K, out]
    raise ValueError("cnf_dynamics needs at least one layer of weights, got none")
