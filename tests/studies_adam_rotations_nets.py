"""A layer with one fused QKV weight, shared by the tests of Study 3's probes and Hessian
probes (tests/test_studies_adam_rotations_*.py)."""

from __future__ import annotations

from torch import nn


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12, bias=False)


class FusedLayer(nn.Module):
    """One fused QKV weight and a loss <W, C>: the gradient is C at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
