"""A small character-level GPT (nanoGPT-like) for Study 3's language-model runs.

Pre-LayerNorm transformer blocks of causal self-attention (one fused ``qkv``
Linear, so ``RotatedOptimizer`` can split it into Q, K, V) and a GELU MLP, over
token plus learned position embeddings. Parameter names are chosen so that
``shiftbench.training.parameter_views.layer_type`` reads them: ``wte``/``wpe`` (embed),
``blocks.i.attn.*`` (attn), ``blocks.i.mlp.*`` (mlp), ``head`` (head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftbench.models.registry import check_size, register


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with a fused QKV projection."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd={n_embd} is not a multiple of n_head={n_head}")
        self.n_head = n_head
        self.dropout = dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, time, channels = x.shape
        heads = self.qkv(x).view(batch, time, 3, self.n_head, channels // self.n_head)
        q, k, v = heads.permute(2, 0, 3, 1, 4)  # each (batch, head, time, head_dim)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, time, channels)))


class MLP(nn.Module):
    """The 4x-wide GELU feed-forward layer."""

    def __init__(self, n_embd: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.mlp = MLP(n_embd, dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    """A GPT over ``vocab_size`` tokens and contexts of at most ``block_size``.

    ``forward(idx)`` maps int64 tokens (B, T) to next-token logits (B, T, vocab_size).
    ``tied=True`` shares the embedding table with the output head. Weights are
    initialised as GPT-2: N(0, 0.02), residual projections scaled by 1/sqrt(2 n_layer).
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float = 0.0,
        *,
        tied: bool = False,
    ) -> None:
        super().__init__()
        if min(vocab_size, block_size, n_layer, n_head, n_embd) < 1 or not 0 <= dropout < 1:
            raise ValueError("CharGPT sizes must be >= 1 and dropout in [0, 1)")
        self.block_size = block_size
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.apply(_init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, std=0.02 / math.sqrt(2 * n_layer))
        if tied:
            self.head.weight = self.wte.weight

    def forward(self, idx: Tensor) -> Tensor:
        time = idx.shape[1]
        if time > self.block_size:
            raise ValueError(f"sequence of {time} tokens exceeds block_size={self.block_size}")
        positions = torch.arange(time, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy of logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


@register("char_gpt")
def char_gpt(
    input_shape: tuple[int, ...],
    num_classes: int,
    depth: int = 2,
    width: int = 64,
    dropout: float = 0.0,
) -> nn.Module:
    """A small character-level GPT (``shiftbench.models.gpt.CharGPT``): ``depth`` blocks of width
    ``width`` with one head per 32 channels, over sequences of ``input_shape[0]`` tokens
    and a vocabulary of ``num_classes`` characters."""
    check_size(depth=depth, width=width, dropout=dropout)
    return CharGPT(num_classes, input_shape[0], depth, max(1, width // 32), width, dropout)
