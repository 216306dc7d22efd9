"""FLOP counting, two conventions (per image; the shared data reports both in millions).

``"nb201"`` -- NAS-Bench-201's (``xautodl`` ``get_model_infos``), the default and what the
``flops`` proxy stores: multiply-accumulates of convolutions (``k_h * k_w * C_in / groups *
C_out`` per output position, plus ``C_out`` per position with a bias), linear layers (``in *
out``, plus ``out`` with a bias) and pooling modules (``k * k`` per output element). Batch norm,
activations, the functional global average pool, additions and concatenations count zero.

``"naslib"`` -- NASLib's zero-cost ``flops`` (``naslib/predictors/utils/pruners/predictive.py``
calls tensorwatch's ``ModelStats``, a torchstat-style counter, on one image): per leaf module,
convolutions as above (``k_h * k_w * C_in * (C_out // groups)`` per position, plus the bias),
batch norm 2 per input element when affine (1 otherwise), ReLU-family activations 1 per input
element, pooling ``k * k`` per output element, linear layers ``in * out`` **without** the bias,
and the global average pool as torchstat's adaptive pool, ``C * (H + 1) * (W + 1)`` (its window
bounds are off by one). Our networks pool with a functional mean, so the pooled module is
named by the network's ``global_pool_source`` attribute. This reproduces the ``flops`` of the
shared NASLib file for all of its NB201 cells (``python_tests/test_nets.py``).
"""

from __future__ import annotations

import torch
from torch import nn

#: FLOP conventions :func:`count_flops` knows.
CONVENTIONS = ("nb201", "naslib")
_RELUS = (nn.ReLU, nn.ReLU6, nn.PReLU, nn.ELU, nn.LeakyReLU)


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def count_flops(module: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32), convention: str = "nb201") -> int:
    """FLOPs of one forward pass of one image of shape ``input_size`` (C, H, W) under
    ``convention`` (``"nb201"`` or ``"naslib"``, module doc)."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    naslib = convention == "naslib"
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = _pair(m.kernel_size)
        positions = output.shape[2] * output.shape[3]
        per_position = kh * kw * m.in_channels * (m.out_channels // m.groups) if naslib else \
            kh * kw * m.in_channels * m.out_channels // m.groups
        total += per_position * positions
        if m.bias is not None:
            total += m.out_channels * positions

    def linear_hook(m: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += m.in_features * m.out_features + (m.out_features if m.bias is not None and not naslib else 0)

    def pool_hook(m: nn.Module, inputs, output) -> None:
        nonlocal total
        kh, kw = _pair(m.kernel_size)
        total += output.shape[1] * output.shape[2] * output.shape[3] * kh * kw

    def bn_hook(m: nn.BatchNorm2d, inputs, output) -> None:
        nonlocal total
        total += inputs[0].numel() * (2 if m.affine else 1)  # batch of one image

    def act_hook(m: nn.Module, inputs, output) -> None:
        nonlocal total
        total += output.numel()  # = the input size (in-place ReLUs overwrite their input)

    def global_pool_hook(m: nn.Module, inputs, output) -> None:
        nonlocal total
        c, h, w = output.shape[1:]
        total += c * (h + 1) * (w + 1)

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            handles.append(m.register_forward_hook(pool_hook))
        elif naslib and isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_hook(bn_hook))
        elif naslib and isinstance(m, _RELUS):
            handles.append(m.register_forward_hook(act_hook))
    if naslib:
        source = getattr(module, "global_pool_source", None)
        if source is None:
            raise ValueError(f"the naslib convention counts the global average pool, but {type(module).__name__} "
                             f"does not name the module it pools (attribute global_pool_source)")
        handles.append(module.get_submodule(source).register_forward_hook(global_pool_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            p = next(module.parameters(), None)
            module(torch.zeros(1, *input_size, device=p.device if p is not None else None,
                               dtype=p.dtype if p is not None and p.is_floating_point() else None))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return int(total)
