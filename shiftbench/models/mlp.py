"""The MLP family: ``depth`` hidden ReLU layers of ``width`` units on the flattened input."""

from __future__ import annotations

import torch
from torch import nn

from shiftbench.models.registry import check_size, register


@register("mlp", vectorizable=True, vectorize_on_cpu=True)
def mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 128,
    dropout: float = 0.0,
) -> nn.Module:
    """``depth`` hidden layers of ``width`` ReLU units on the flattened input."""
    check_size(depth=depth, width=width, dropout=dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = int(torch.tensor(input_shape).prod())
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU(), nn.Dropout(dropout)]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)
