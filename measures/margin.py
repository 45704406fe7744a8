"""Output-margin and path-norm measures (Jiang et al., ICLR 2020, App. C.2 and C.5).

``gamma`` is the 10th-percentile over the training set of the margin
``f_y(x) - max_{j != y} f_j(x)`` (robust to a few outliers, as in Jiang et al.), by default
its absolute value as the reference takes it (:attr:`MeasureContext.margin`).
"""

from __future__ import annotations

import torch
from torch.func import functional_call

from shiftbench.measures import utils as mu
from shiftbench.measures.core import MeasureContext, Undefined, measure


@measure("inverse_margin", family="margin")
def inverse_margin(ctx: MeasureContext) -> float:
    """``1 / gamma^2`` (Jiang eq. 22)."""
    return 1.0 / ctx.margin**2


def path_norm_value(ctx: MeasureContext) -> float:
    """``sum_k f_{w^2}(1)[k]``: the network with every parameter squared (biases too),
    evaluated on an all-ones input, summed over outputs. For a ReLU network this is the
    sum over input-output paths of the product of squared weights, the squared l2 path
    norm (Neyshabur, Tomioka & Srebro 2015; Jiang eq. 44). BatchNorm is folded first;
    other normalization layers make it undefined."""

    def value() -> float:
        model = ctx.folded
        kept = [name for name, mod in model.named_modules() if isinstance(mod, mu.NORM_LAYERS)]
        if kept:
            raise Undefined(f"path norm needs a network without normalization layers: {kept[0]}")
        squared = {k: v.square() for k, v in mu.trainable(model).items()}
        ones = torch.ones(1, *ctx.x.shape[1:], device=ctx.x.device, dtype=ctx.x.dtype)
        with torch.no_grad():
            out = functional_call(model, (squared, dict(model.named_buffers())), (ones,))
        return float(out.sum())

    return ctx.memo("path_norm", value)


@measure("path_norm", family="margin")
def path_norm(ctx: MeasureContext) -> float:
    """The squared l2 path norm (see ``path_norm_value``; Jiang eq. 44)."""
    return path_norm_value(ctx)


@measure("path_norm_over_margin", family="margin")
def path_norm_over_margin(ctx: MeasureContext) -> float:
    """``path_norm / gamma^2`` (Jiang eq. 43)."""
    return path_norm_value(ctx) / ctx.margin**2
