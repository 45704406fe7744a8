"""Calibration and confidence of the predictive distribution ``p = softmax(f(x))``, on the
training data (``*_train``) and on the held-out ID split (``*_heldout``, when
``heldout_data`` is given).

ECE and MCE use 15 equal-width confidence bins ``((b-1)/15, b/15]`` (Guo, Pleiss, Sun &
Weinberger, ICML 2017, Eq. 3 and 5; Naeini et al. 2015).

Direction: ECE, MCE, NLL, Brier and entropy grow with miscalibration and uncertainty and
predict a larger gap (+1); the mean confidence predicts a smaller one (-1): a model that is
confident on data it was not trained on tends to generalize (Hendrycks & Gimpel 2017).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from shiftbench.measures.core import MeasureContext, measure

BINS = 15


def bin_gaps(logits: Tensor, y: Tensor, bins: int = BINS) -> tuple[Tensor, Tensor]:
    """Per non-empty confidence bin: ``|accuracy - mean confidence|`` and the bin's share of
    examples."""
    confidence, prediction = logits.softmax(1).max(1)
    correct = (prediction == y).double()
    index = (torch.ceil(confidence.double() * bins).long() - 1).clamp(0, bins - 1)
    count = torch.zeros(bins, dtype=torch.float64, device=y.device)
    count.index_add_(0, index, torch.ones_like(correct))
    conf_sum = torch.zeros_like(count).index_add_(0, index, confidence.double())
    acc_sum = torch.zeros_like(count).index_add_(0, index, correct)
    used = count > 0
    gaps = (acc_sum[used] - conf_sum[used]).abs() / count[used]
    return gaps, count[used] / len(y)


def ece(logits: Tensor, y: Tensor) -> float:
    """Expected calibration error ``sum_b |B_b|/n |acc(B_b) - conf(B_b)|``."""
    gaps, share = bin_gaps(logits, y)
    return float((gaps * share).sum())


def mce(logits: Tensor, y: Tensor) -> float:
    """Maximum calibration error ``max_b |acc(B_b) - conf(B_b)|``."""
    return float(bin_gaps(logits, y)[0].max())


def nll(logits: Tensor, y: Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy)."""
    return float(F.cross_entropy(logits, y))


def brier(logits: Tensor, y: Tensor) -> float:
    """Multi-class Brier score ``mean_i sum_k (p_ik - [y_i = k])^2`` (Brier 1950)."""
    onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return float((logits.softmax(1) - onehot).square().sum(1).mean())


def confidence(logits: Tensor, y: Tensor) -> float:
    """Mean maximum softmax probability (Hendrycks & Gimpel, ICLR 2017)."""
    return float(logits.softmax(1).max(1).values.mean())


def entropy(logits: Tensor, y: Tensor) -> float:
    """Mean predictive entropy ``-sum_k p_k log p_k`` (nats)."""
    logp = logits.log_softmax(1)
    return float(-(logp.exp() * logp).sum(1).mean())


STATISTICS = (ece, mce, nll, brier, confidence, entropy)
DIRECTIONS = {"confidence": -1}
"""Statistics whose larger values predict a smaller gap; the others predict a larger one."""


def _register(stat, split: str) -> None:
    def value(ctx: MeasureContext) -> float:
        logits, y = (ctx.logits, ctx.y) if split == "train" else ctx.heldout_logits
        return stat(logits, y)

    value.__doc__ = f"{stat.__doc__.rstrip('.')}, on the {split} data."
    value.__qualname__ = f"{stat.__name__}_{split}"
    measure(
        f"{stat.__name__}_{split}",
        family="calibration",
        adjustment="none",
        direction=DIRECTIONS.get(stat.__name__, 1),
    )(value)


for _stat in STATISTICS:
    for _split in ("train", "heldout"):
        _register(_stat, _split)
