"""Worst-case sharpness measures (Jiang et al., ICLR 2020, Sec. 7-8 and App. C.6-C.7;
Keskar et al., ICLR 2017).

``alpha'`` is the largest box size such that the worst perturbation ``nu`` with
``|nu_i| <= alpha'`` (magnitude-aware: ``|nu_i| <= alpha' |w_i| + eps``) drops the
training accuracy on ``config.subset`` examples by at most ``config.accuracy_drop`` (0.1).
The worst case is approximated by ``config.ascent_steps`` steps of projected sign-gradient
ascent on the cross-entropy, and ``alpha'`` is found by
:func:`shiftbench.measures.utils.bisect_scale`. Every parameter of the BatchNorm-folded
model is perturbed; the bounds sum over its weights ``w`` only (biases excluded, as the
PAC-Bayes bounds after the reference: see :mod:`shiftbench.measures`), ``w^0`` the same at
initialization, ``omega`` their number, ``m`` the number of training examples. The
magnitude-aware denominator uses ``w - w^0`` for both priors, as the reference's PAC-Bayes
bound does, and the confidence ``delta`` is ``alpha'`` (as the reference does for
``sigma'``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from shiftbench.measures import utils as mu
from shiftbench.measures.core import MeasureContext, measure


def alpha(ctx: MeasureContext, magnitude: bool) -> float:
    """The bisected worst-case box size ``alpha'`` (plain or magnitude-aware)."""
    key = "sharpness_mag_alpha" if magnitude else "sharpness_alpha"
    return ctx.memo(key, lambda: _search(ctx, magnitude, key))


def _search(ctx: MeasureContext, magnitude: bool, key: str) -> float:
    cfg = ctx.config
    model, (x, y) = ctx.folded, ctx.subset
    params = mu.trainable(model)
    gen = ctx.generator(key)

    def drop_at(scale: float) -> float:
        bound = {
            k: scale * w.abs() + cfg.magnitude_eps if magnitude else torch.full_like(w, scale)
            for k, w in params.items()
        }
        nu = mu.worst_case_perturbation(model, params, bound, x, y, cfg.ascent_steps, gen)
        shifted = {k: w + nu[k] for k, w in params.items()}
        return ctx.accuracy_on_subset - mu.accuracy(model, x, y, shifted, cfg.eval_batch_size)

    return mu.bisect_scale(drop_at, cfg.accuracy_drop, cfg.drop_tolerance, cfg.bisection_depth)


def _bound(ctx: MeasureContext, from_init: bool) -> float:
    a = alpha(ctx, magnitude=False)
    sq_norm = float(ctx.offsets(from_init).square().sum())
    return sq_norm * math.log(2 * ctx.omega) / (4 * a**2) + math.log(ctx.m / a) + 10


def _mag_bound(ctx: MeasureContext, from_init: bool) -> float:
    a = alpha(ctx, magnitude=True)
    reference_sq_norm = float(ctx.offsets(from_init).square().sum())
    coefficient = a**2 + 4 * math.log(2 * ctx.omega / a)
    return mu.magnitude_aware_bound(
        reference_sq_norm,
        ctx.offsets(from_init=True),
        a,
        coefficient,
        ctx.config.magnitude_eps,
        ctx.m,
    )


@measure("sharpness_init", family="sharpness")
def sharpness_init(ctx: MeasureContext) -> float:
    """``||w - w^0||^2 log(2 omega) / (4 alpha'^2) + log(m / alpha') + 10``
    (Jiang et al., sharpness-init)."""
    return _bound(ctx, from_init=True)


@measure("sharpness_orig", family="sharpness")
def sharpness_orig(ctx: MeasureContext) -> float:
    """``||w||^2 log(2 omega) / (4 alpha'^2) + log(m / alpha') + 10``
    (Jiang et al., sharpness-orig)."""
    return _bound(ctx, from_init=False)


@measure("sharpness_flatness", family="sharpness")
def sharpness_flatness(ctx: MeasureContext) -> float:
    """``1 / alpha'^2`` (Jiang et al., sharpness-flatness)."""
    return 1.0 / alpha(ctx, magnitude=False) ** 2


@measure("sharpness_mag_init", family="sharpness")
def sharpness_mag_init(ctx: MeasureContext) -> float:
    """``1/4 sum_i log((eps^2 + (alpha'^2 + 4 log(2 omega / alpha')) ||w - w^0||^2 / omega)
    / (eps^2 + alpha'^2 (w_i - w^0_i)^2)) + log(m / alpha') + 10`` with the
    magnitude-aware ``alpha'`` (Jiang et al., magnitude-aware sharpness-init)."""
    return _mag_bound(ctx, from_init=True)


@measure("sharpness_mag_orig", family="sharpness")
def sharpness_mag_orig(ctx: MeasureContext) -> float:
    """The magnitude-aware sharpness bound with ``||w||^2`` in the numerator and
    ``(w_i - w^0_i)^2`` in the denominator, as ``pacbayes_mag_orig`` (sharpness-mag-orig)."""
    return _mag_bound(ctx, from_init=False)


@measure("sharpness_mag_flatness", family="sharpness")
def sharpness_mag_flatness(ctx: MeasureContext) -> float:
    """``1 / alpha'^2`` with the magnitude-aware ``alpha'`` (sharpness-mag-flatness)."""
    return 1.0 / alpha(ctx, magnitude=True) ** 2


@measure("sharpness_keskar", family="sharpness", adjustment="none")
def sharpness_keskar(ctx: MeasureContext) -> float:
    """``100 (max_{|nu_i| <= a (|w_i| + 1)} L(w + nu) - L(w)) / (1 + L(w))`` with
    ``a = config.sharpness_alpha`` and ``L`` the training cross-entropy on the subset
    (Keskar et al. 2017, Eq. 4, full space), the maximum by projected ascent."""
    cfg = ctx.config
    model, (x, y) = ctx.folded, ctx.subset
    params = mu.trainable(model)
    bound = {k: cfg.sharpness_alpha * (w.abs() + 1) for k, w in params.items()}
    nu = mu.worst_case_perturbation(
        model, params, bound, x, y, cfg.ascent_steps, ctx.generator("sharpness_keskar")
    )
    buffers = dict(model.named_buffers())
    with torch.no_grad():
        base = float(F.cross_entropy(functional_call(model, (params, buffers), (x,)), y))
        shifted = {k: w + nu[k] for k, w in params.items()}
        worst = float(F.cross_entropy(functional_call(model, (shifted, buffers), (x,)), y))
    return 100 * (max(worst, base) - base) / (1 + base)
