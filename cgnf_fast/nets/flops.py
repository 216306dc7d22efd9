"""FLOP counting with NAS-Bench-201's convention (``xautodl`` ``get_model_infos``).

Per image, multiply-accumulates of: convolutions (``k_h * k_w * C_in / groups * C_out`` per
output position, plus ``C_out`` per position with a bias), linear layers (``in * out``, plus
``out`` with a bias) and pooling (``k * k`` per output element). Batch norm, activations,
additions and concatenations count zero. This is the convention of the ``flops`` column in
NB201/NASLib data (reported there in millions).
"""

from __future__ import annotations

import torch
from torch import nn


def _pair(k: int | tuple[int, int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def count_flops(module: nn.Module, input_size: tuple[int, int, int] = (3, 32, 32)) -> int:
    """FLOPs of one forward pass of one image of shape ``input_size`` (C, H, W)."""
    total = 0

    def conv_hook(m: nn.Conv2d, inputs, output) -> None:
        nonlocal total
        kh, kw = _pair(m.kernel_size)
        positions = output.shape[2] * output.shape[3]
        total += kh * kw * m.in_channels * m.out_channels // m.groups * positions
        if m.bias is not None:
            total += m.out_channels * positions

    def linear_hook(m: nn.Linear, inputs, output) -> None:
        nonlocal total
        total += m.in_features * m.out_features + (m.out_features if m.bias is not None else 0)

    def pool_hook(m: nn.Module, inputs, output) -> None:
        nonlocal total
        kh, kw = _pair(m.kernel_size)
        total += output.shape[1] * output.shape[2] * output.shape[3] * kh * kw

    handles = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            handles.append(m.register_forward_hook(pool_hook))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_size))
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return int(total)
