"""PAC-Bayes flatness measures with the sigma bisection (Jiang et al., ICLR 2020, Sec. 7-8
and App. C.6-C.7; McAllester 1999; Dziugaite & Roy 2017; Neyshabur et al. 2017).

``sigma'`` is the largest scale of an isotropic Gaussian weight perturbation for which
the mean training accuracy (over ``config.mc_draws`` draws, on ``config.subset`` examples)
drops by at most ``config.accuracy_drop`` (0.1), found by
:func:`shiftbench.measures.utils.bisect_scale`. By default (``config.noise_std="reference"``)
the noise's standard deviation is ``sigma'^2``, and ``sigma'^2 w_i^2 + eps^2`` for the
magnitude-aware variant, as the reference's ``_perturbed_model`` draws it
(``data/generation/measures.py`` lines 47 and 49); ``"paper"`` gives Jiang et al.'s std
``sigma'`` and variance ``sigma'^2 w_i^2 + eps^2``. Every parameter of the BatchNorm-folded
model is perturbed, and the scale 1 and shift 0 of each folded BatchNorm too, as the
reference perturbs the BatchNorms its ``_reparam`` resets (:attr:`MeasureContext.perturbable`,
lines 17-35 and 52); the bounds sum over its weights only (``w``, biases excluded, as the
reference's ``get_all_measures`` does: see :mod:`shiftbench.measures`), ``w^0`` the same at
initialization, ``omega`` their number and ``m`` the number of training examples.
Following the reference implementation, the confidence term ``log(m / delta)`` uses
``delta = sigma'``.
"""

from __future__ import annotations

import math

from torch import Tensor

from shiftbench.measures import utils as mu
from shiftbench.measures.config import MeasureConfig
from shiftbench.measures.core import MeasureContext, measure


def sigma(ctx: MeasureContext, magnitude: bool) -> float:
    """The bisected perturbation scale ``sigma'`` (plain or magnitude-aware)."""
    key = "pacbayes_mag_sigma" if magnitude else "pacbayes_sigma"
    return ctx.memo(key, lambda: _search(ctx, magnitude, key))


def _search(ctx: MeasureContext, magnitude: bool, key: str) -> float:
    cfg = ctx.config
    model, (x, y) = ctx.perturbable, ctx.subset
    params = mu.trainable(model)
    draws = mu.gaussian_draws(params, cfg.mc_draws, ctx.generator(key))

    def drop_at(scale: float) -> float:
        accs = []
        for z in draws:
            noisy = {k: w + _std(w, scale, magnitude, cfg) * z[k] for k, w in params.items()}
            accs.append(mu.accuracy(model, x, y, noisy, cfg.eval_batch_size))
        return ctx.accuracy_on_subset - sum(accs) / len(accs)

    return mu.bisect_scale(drop_at, cfg.accuracy_drop, cfg.drop_tolerance, cfg.bisection_depth)


def _std(w: Tensor, scale: float, magnitude: bool, cfg: MeasureConfig) -> Tensor | float:
    """The noise's standard deviation at ``scale`` for weights ``w`` (module docstring)."""
    if cfg.noise_std == "reference":
        return scale**2 * w.square() + cfg.magnitude_eps**2 if magnitude else scale**2
    return (scale**2 * w.square() + cfg.magnitude_eps**2).sqrt() if magnitude else scale


def _bound(ctx: MeasureContext, from_init: bool) -> float:
    s = sigma(ctx, magnitude=False)
    return float(ctx.offsets(from_init).square().sum()) / (4 * s**2) + math.log(ctx.m / s) + 10


def _mag_bound(ctx: MeasureContext, from_init: bool) -> float:
    s = sigma(ctx, magnitude=True)
    reference_sq_norm = float(ctx.offsets(from_init).square().sum())
    return mu.magnitude_aware_bound(
        reference_sq_norm,
        ctx.offsets(from_init=True),
        s,
        s**2 + 1,
        ctx.config.magnitude_eps,
        ctx.m,
    )


@measure("pacbayes_init", family="pac_bayes")
def pacbayes_init(ctx: MeasureContext) -> float:
    """``||w - w^0||^2 / (4 sigma'^2) + log(m / sigma') + 10`` (Jiang eq. 48)."""
    return _bound(ctx, from_init=True)


@measure("pacbayes_orig", family="pac_bayes")
def pacbayes_orig(ctx: MeasureContext) -> float:
    """``||w||^2 / (4 sigma'^2) + log(m / sigma') + 10`` (Jiang eq. 49)."""
    return _bound(ctx, from_init=False)


@measure("pacbayes_flatness", family="pac_bayes")
def pacbayes_flatness(ctx: MeasureContext) -> float:
    """``1 / sigma'^2`` (Jiang eq. 53)."""
    return 1.0 / sigma(ctx, magnitude=False) ** 2


@measure("pacbayes_mag_init", family="pac_bayes")
def pacbayes_mag_init(ctx: MeasureContext) -> float:
    """``1/4 sum_i log((eps^2 + (sigma'^2 + 1) ||w - w^0||^2 / omega) /
    (eps^2 + sigma'^2 (w_i - w^0_i)^2)) + log(m / sigma') + 10`` with the magnitude-aware
    ``sigma'`` (Jiang eq. 56)."""
    return _mag_bound(ctx, from_init=True)


@measure("pacbayes_mag_orig", family="pac_bayes")
def pacbayes_mag_orig(ctx: MeasureContext) -> float:
    """The magnitude-aware bound with the prior centred at the origin: ``||w - w^0||^2`` of
    ``pacbayes_mag_init``'s numerator becomes ``||w||^2``; the denominator keeps
    ``(w_i - w^0_i)^2`` (Jiang eq. 57; the reference's ``_pacbayes_mag_bound(w_vec)``)."""
    return _mag_bound(ctx, from_init=False)


@measure("pacbayes_mag_flatness", family="pac_bayes")
def pacbayes_mag_flatness(ctx: MeasureContext) -> float:
    """``1 / sigma'^2`` with the magnitude-aware ``sigma'`` (Jiang eq. 61)."""
    return 1.0 / sigma(ctx, magnitude=True) ** 2
