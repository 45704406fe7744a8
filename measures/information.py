"""Information criteria from the training log-likelihood ``log L = sum_i log p(y_i | x_i)``
with ``k = omega`` parameters (:attr:`shiftbench.measures.MeasureContext.omega`, the
BatchNorm-folded model's weights, biases excluded, as ``params`` and the reference's
``num_params``: one count for every measure) and ``m`` training examples. TIC's trace runs
over every parameter, so TIC tends to AIC for a well-specified model without biases.

The criteria estimate the expected out-of-sample deviance, so lower is better; they are
not size adjusted. Under Jiang et al.'s stopping rule (train to cross-entropy 0.01) every
model ends with ``-2 log L ~ 0.02 m``, so AIC and BIC reduce to an affine function of the
parameter count and rank models as ``params`` does.
"""

from __future__ import annotations

import math

import torch

from shiftbench.measures.core import MeasureContext, measure


@measure("aic", family="information", adjustment="none")
def aic(ctx: MeasureContext) -> float:
    """Akaike information criterion ``2 k - 2 log L`` (Akaike 1974)."""
    return 2 * ctx.omega - 2 * ctx.log_likelihood


@measure("bic", family="information", adjustment="none")
def bic(ctx: MeasureContext) -> float:
    """Bayesian information criterion ``k log m - 2 log L`` (Schwarz 1978)."""
    return ctx.omega * math.log(ctx.m) - 2 * ctx.log_likelihood


@measure("tic", family="information", adjustment="none")
def tic(ctx: MeasureContext) -> float:
    """Takeuchi information criterion ``-2 log L + 2 tr(J^-1 I)`` (Takeuchi 1976; its link
    to the generalization gap: Thomas et al., AISTATS 2020, Eq. 5), with ``I`` the
    gradient outer-product matrix and ``J`` the Hessian of the per-example loss.

    Approximation: both are diagonal, on ``config.subset`` examples; ``I`` is the empirical
    Fisher diagonal ``mean_i g_i^2`` and ``J`` the Fisher of the model's predictive
    distribution ``mean_i sum_k p_ik g_ik^2`` (the Gauss-Newton diagonal, which equals the
    expected Hessian for softmax cross-entropy and is never negative), so
    ``tr(J^-1 I) = sum_j I_jj / J_jj`` over parameters with ``J_jj > 0`` (where
    ``J_jj = 0``, ``I_jj = 0`` too). With a well-specified model ``I = J`` and TIC = AIC.
    """
    stats = ctx.grad_stats
    positive = stats.fisher_diag > 0
    trace = torch.where(positive, stats.sq_mean / stats.fisher_diag, 0.0)
    return -2 * ctx.log_likelihood + 2 * float(trace.sum())
