"""Spectral-norm measures (Jiang et al., ICLR 2020, App. C.4-C.5; Bartlett et al. 2017;
Neyshabur et al. 2018; Pitas et al. 2017).

Each measure comes in two variants. The plain name uses a conv kernel reshaped to a
``(c_out, c_in k k)`` matrix (Yoshida & Miyato 2017), as Jiang et al. do; the ``_fft``
name uses the operator norm of the convolution from the 2-D FFT of the kernel (Sedghi et
al. 2019): by default (``config.fft_input="image"``) a stride-1 circular convolution on the
input image's size for every layer, as the reference's ``_spectral_norm_fft``
(``data/generation/measures.py`` line 224); with ``"layer"`` the layer's own map on its
recorded input size (exact for circular padding, a tight upper bound for zero padding: see
``shiftbench.measures.utils.conv_operator_norm``). Linear layers are
the same in both. ``||W_i||_2`` is a layer's spectral norm, ``W_i^0`` the layer at
initialization, ``d`` the number of layers and ``gamma`` the 10th-percentile margin. As in
the reference implementation, the Frobenius norms in the ratios are those of the weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shiftbench.measures import utils as mu
from shiftbench.measures.core import MeasureContext, measure

VARIANTS = {"": "reshaped kernel", "_fft": "exact conv operator (FFT)"}


def _norm(ctx: MeasureContext, layer: mu.Layer, weight: Tensor, variant: str) -> float:
    if variant == "_fft" and isinstance(layer.module, nn.Conv2d):
        image = tuple(ctx.x.shape[-2:]) if ctx.config.fft_input == "image" else None
        return mu.conv_layer_norm(layer, weight, image)
    return float(torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2))


def spec_squared(ctx: MeasureContext, variant: str) -> list[float]:
    """``||W_i||_2^2`` for every layer."""
    return ctx.memo(
        f"spec{variant}",
        lambda: [_norm(ctx, layer, layer.weight, variant) ** 2 for layer in ctx.layers],
    )


def dist_spec_squared(ctx: MeasureContext, variant: str) -> list[float]:
    """``||W_i - W_i^0||_2^2`` for every layer."""
    return ctx.memo(
        f"dist_spec{variant}",
        lambda: [
            _norm(ctx, a, a.weight - b.weight, variant) ** 2
            for a, b in zip(ctx.layers, ctx.init_layers)
        ],
    )


def _fro_squared(ctx: MeasureContext) -> list[float]:
    return [float(layer.weight.square().sum()) for layer in ctx.layers]


def _register(variant: str) -> None:
    """Register the eight spectral measures of one variant."""
    how = VARIANTS[variant]

    def log_prod_of_spec(ctx: MeasureContext) -> float:
        return sum(math.log(v) for v in spec_squared(ctx, variant))

    def log_prod_of_spec_over_margin(ctx: MeasureContext) -> float:
        return log_prod_of_spec(ctx) - 2 * math.log(ctx.margin)

    def log_sum_of_spec(ctx: MeasureContext) -> float:
        d = len(ctx.layers)
        return math.log(d) + log_prod_of_spec(ctx) / d

    def log_sum_of_spec_over_margin(ctx: MeasureContext) -> float:
        d = len(ctx.layers)
        return math.log(d) + log_prod_of_spec_over_margin(ctx) / d

    def fro_over_spec(ctx: MeasureContext) -> float:
        return sum(f / s for f, s in zip(_fro_squared(ctx), spec_squared(ctx, variant)))

    def log_spec_init_main(ctx: MeasureContext) -> float:
        dist_fro = [
            float((a.weight - b.weight).square().sum())
            for a, b in zip(ctx.layers, ctx.init_layers)
        ]
        ratio = sum(f / s for f, s in zip(dist_fro, spec_squared(ctx, variant)))
        return log_prod_of_spec_over_margin(ctx) + math.log(ratio)

    def log_spec_orig_main(ctx: MeasureContext) -> float:
        return log_prod_of_spec_over_margin(ctx) + math.log(fro_over_spec(ctx))

    def dist_spec_init(ctx: MeasureContext) -> float:
        return sum(dist_spec_squared(ctx, variant))

    docs = {
        log_prod_of_spec: "``log prod_i ||W_i||_2^2`` (Jiang eq. 32)",
        log_prod_of_spec_over_margin: "``log (prod_i ||W_i||_2^2 / gamma^2)`` (Jiang eq. 31; "
        "Bartlett et al. 2017)",
        log_sum_of_spec: "``log (d (prod_i ||W_i||_2^2)^(1/d))``: the sum of squared spectral "
        "norms of the balanced rescaling (Jiang eq. 35)",
        log_sum_of_spec_over_margin: "``log (d (prod_i ||W_i||_2^2 / gamma^2)^(1/d))`` "
        "(Jiang eq. 34)",
        fro_over_spec: "``sum_i ||W_i||_F^2 / ||W_i||_2^2``: the sum of stable ranks "
        "(Jiang eq. 33)",
        log_spec_init_main: "``log (prod_i ||W_i||_2^2 / gamma^2 * sum_i ||W_i - W_i^0||_F^2 "
        "/ ||W_i||_2^2)``: the main term of Neyshabur et al.'s (2018) "
        "spectral bound, relative to initialization (Jiang eq. 29)",
        log_spec_orig_main: "``log (prod_i ||W_i||_2^2 / gamma^2 * sum_i ||W_i||_F^2 / "
        "||W_i||_2^2)``: the same term relative to the origin (Jiang eq. 30)",
        dist_spec_init: "``sum_i ||W_i - W_i^0||_2^2`` (Jiang eq. 41)",
    }
    for fn, doc in docs.items():
        fn.__doc__ = f"{doc}; conv layers by the {how}."
        fn.__qualname__ = f"{fn.__name__}{variant}"
        measure(f"{fn.__name__}{variant}", family="spectral")(fn)


for _variant in VARIANTS:
    _register(_variant)
