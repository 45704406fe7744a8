"""Parameter count and norm-based measures (Jiang et al., ICLR 2020, App. C.1, C.3, C.5).

Layers are the Linear and Conv2d layers after BatchNorm folding; ``W_i`` is a layer's
weight (biases excluded, as in Jiang et al.), ``W_i^0`` the same layer at initialization,
``d`` the number of layers and ``gamma`` the 10th-percentile training margin.
"""

from __future__ import annotations

import math

import torch

from shiftbench.measures.core import MeasureContext, measure


def _fro_squared(ctx: MeasureContext) -> list[float]:
    return [float(layer.weight.square().sum()) for layer in ctx.layers]


def _weights(ctx: MeasureContext) -> torch.Tensor:
    return ctx.offsets(from_init=False)


def _dist_weights(ctx: MeasureContext) -> torch.Tensor:
    return ctx.offsets(from_init=True)


@measure("params", family="norms")
def params(ctx: MeasureContext) -> float:
    """Number of weights ``omega`` of the BatchNorm-folded model, biases excluded
    (VC-dimension proxy; Jiang eq. 20; the reference's ``num_params = len(w_vec)``;
    :attr:`shiftbench.measures.MeasureContext.omega`)."""
    return float(ctx.omega)


@measure("l2", family="norms")
def l2(ctx: MeasureContext) -> float:
    """``||w||_2`` of all layer weights concatenated (reference implementation's L2)."""
    return float(_weights(ctx).norm())


@measure("l2_dist", family="norms")
def l2_dist(ctx: MeasureContext) -> float:
    """``||w - w^0||_2``: distance to initialization of all layer weights."""
    return float(_dist_weights(ctx).norm())


@measure("param_norm", family="norms")
def param_norm(ctx: MeasureContext) -> float:
    """``sum_i ||W_i||_F^2`` (Jiang eq. 42)."""
    return sum(_fro_squared(ctx))


@measure("fro_dist", family="norms")
def fro_dist(ctx: MeasureContext) -> float:
    """``sum_i ||W_i - W_i^0||_F^2`` (Jiang eq. 40; Nagarajan & Kolter 2019)."""
    return float(_dist_weights(ctx).square().sum())


@measure("log_prod_of_fro", family="norms")
def log_prod_of_fro(ctx: MeasureContext) -> float:
    """``log prod_i ||W_i||_F^2`` (Jiang eq. 37)."""
    return sum(math.log(v) for v in _fro_squared(ctx))


@measure("log_prod_of_fro_over_margin", family="norms")
def log_prod_of_fro_over_margin(ctx: MeasureContext) -> float:
    """``log (prod_i ||W_i||_F^2 / gamma^2)`` (Jiang eq. 36)."""
    return log_prod_of_fro(ctx) - 2 * math.log(ctx.margin)


@measure("log_sum_of_fro", family="norms")
def log_sum_of_fro(ctx: MeasureContext) -> float:
    """``log (d (prod_i ||W_i||_F^2)^(1/d))`` (Jiang eq. 39): the sum of squared norms
    after the ReLU rescaling that balances the layers, which makes it rescaling invariant."""
    d = len(ctx.layers)
    return math.log(d) + log_prod_of_fro(ctx) / d


@measure("log_sum_of_fro_over_margin", family="norms")
def log_sum_of_fro_over_margin(ctx: MeasureContext) -> float:
    """``log (d (prod_i ||W_i||_F^2 / gamma^2)^(1/d))`` (Jiang eq. 38)."""
    d = len(ctx.layers)
    return math.log(d) + log_prod_of_fro_over_margin(ctx) / d
