"""A tiny net with every kind of parameter and a RotatedOptimizer over it, shared by the
tests of the rotated optimizer and of the parameter views (tests/test_training_*.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from shiftbench.training.rotations import RotatedOptimizer


class TinyNet(nn.Module):
    """An embedding, a fused QKV projection and a head: every kind of parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.qkv = nn.Linear(4, 12)
        self.fc = nn.Linear(12, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.qkv(self.emb(idx))))


def _setup() -> tuple[TinyNet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = TinyNet().double()
    x, y = torch.randint(0, 5, (16,)), torch.randint(0, 3, (16,))
    return model, x, y


MODEL, X, Y = _setup()


def make_rotated(
    scope: str, base: type, **kwargs: object
) -> Callable[[nn.Module], RotatedOptimizer]:
    """A builder of ``base`` rotated by ``scope`` over a model, in blocks of 3."""
    return lambda m: RotatedOptimizer(
        m.named_parameters(), base, scope=scope, block_size=3, module=m, **kwargs
    )


def nonzero_shadows(optimizer: RotatedOptimizer, values: dict) -> list[torch.Tensor]:
    """The rotated ``values`` (keyed by parameter) that are not all zero."""
    return [v for v in optimizer.rotate(values).values() if v.abs().max() > 0]
