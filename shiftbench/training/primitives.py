"""The hot loop's pieces: seeding, on-device minibatch sampling, and batched evaluation.

Small data sets live as tensors on the training device; a minibatch is an
index draw and a gather, never a DataLoader.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftbench.data.environments import Environment


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a trial is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


LR_SCHEDULES = ("constant", "cosine")


def lr_factor(
    step: int,
    steps: int,
    warmup_steps: int = 0,
    schedule: str = "constant",
    min_ratio: float = 0.1,
) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps`` as a fraction of the peak, as
    nanoGPT's ``train.py:get_lr``: a linear warm-up ``(step + 1) / (warmup_steps + 1)`` for
    the first ``warmup_steps`` steps, then constant, or (``cosine``) a half cosine from 1 down
    to ``min_ratio`` (nanoGPT: min_lr = lr / 10) reached at the last step. Zhang, Maes et al.
    (NeurIPS 2025, App. B.2) train GPT-2 with it (2,000 warm-up steps of 100,000, cosine to
    6e-5 = lr / 10, clipping at 1.0); their ViT/S and ResNet-50 use a cosine schedule with 5
    warm-up epochs of 100 (no floor or clipping stated)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    if schedule != "cosine":
        raise ValueError(f"unknown lr schedule {schedule!r}; expected one of {LR_SCHEDULES}")
    progress = min(1.0, (step - warmup_steps) / max(1, steps - 1 - warmup_steps))
    return min_ratio + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - min_ratio)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class EnvSampler:
    """Draws ``batch_size`` examples with replacement from each environment (DomainBed's
    infinite random sampler), from a generator seeded by the trial."""

    def __init__(self, envs: list[Environment], batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.envs = envs
        self.batch_size = batch_size
        self.device = envs[0].y.device
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def draw(self, env: Environment) -> torch.Tensor:
        """``batch_size`` indices into ``env``, uniform with replacement, from the generator."""
        return torch.randint(
            len(env), (self.batch_size,), generator=self.generator, device=self.device
        )

    def __next__(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [env.take(self.draw(env)) for env in self.envs]

    def __iter__(self) -> EnvSampler:
        return self

    @property
    def examples_per_epoch(self) -> int:
        return sum(len(env) for env in self.envs)


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy and accuracy of a model on one environment."""

    loss: float
    acc: float
    n: int


def evaluate(model: nn.Module, env: Environment, batch_size: int = 2048) -> Evaluation:
    """Cross-entropy and accuracy over the whole environment, in eval mode (mode restored).

    Per prediction: for sequence models (logits ``(B, T, V)``, targets ``(B, T)``) every
    token counts once, so ``n`` is the number of tokens.
    """
    return evaluate_all(model, [env], batch_size)[0]


@torch.no_grad()
def evaluate_all(
    model: nn.Module, envs: Sequence[Environment], batch_size: int = 2048
) -> list[Evaluation]:
    """:func:`evaluate` on each environment, with the model put in eval mode once for all
    of them (switching a model's mode walks all its modules: once per checkpoint, not
    once per environment)."""
    was_training = model.training
    model.eval()
    try:
        return [_evaluate(model, env, batch_size) for env in envs]
    finally:
        model.train(was_training)


def _evaluate(model: nn.Module, env: Environment, batch_size: int) -> Evaluation:
    loss_sum = torch.zeros((), device=env.y.device)
    correct = torch.zeros((), device=env.y.device)
    for start in range(0, len(env), batch_size):
        stop = min(start + batch_size, len(env))
        if isinstance(env.x, torch.Tensor):  # a view, not a copy, of the inputs
            x, y = env.x[start:stop], env.y[start:stop]
        else:  # lazy inputs load by index
            idx = torch.arange(start, stop, device=env.y.device)
            x, y = env.x[idx], env.y[idx]
        logits, y = flat_predictions(model(x).float(), y)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    n = env.y.numel()
    return Evaluation(loss=(loss_sum / n).item(), acc=(correct / n).item(), n=n)


def flat_predictions(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K)``/``(N,)`` as is; sequence logits ``(B, T, V)``/``(B, T)`` flattened to
    one prediction per token, so classification and language modelling share one loss. The
    classification case returns the tensors themselves: a reshape there is a no-op that still
    costs a view and an autograd node per step (0.7% of a digits CNN step)."""
    if logits.dim() == 2 and y.dim() == 1:
        return logits, y
    return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
