"""Optimization-based measures (Jiang et al., ICLR 2020, App. C.8; Liang et al., AISTATS
2019).

The speed measures read ``history``: the ``(step, training cross-entropy)`` pairs recorded
during training, in step order. The gradient measures use ``config.subset`` training
examples and every parameter of the BatchNorm-folded model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from shiftbench import measure_utils as mu
from shiftbench.measures import MeasureContext, Undefined, measure


def first_step_below(ctx: MeasureContext, level: float) -> int:
    """The first recorded step whose training cross-entropy is at most ``level``."""
    if not ctx.history:
        raise Undefined("no training history given")
    for step, loss in ctx.history:
        if loss <= level:
            return int(step)
    raise Undefined(f"training cross-entropy never reached {level}")


@measure("steps_to_ce_0p1", family="optimization", adjustment="none")
def steps_to_ce_0p1(ctx: MeasureContext) -> float:
    """Number of steps to reach training cross-entropy 0.1 (Jiang et al., #steps CE=0.1)."""
    return float(first_step_below(ctx, 0.1))


@measure("steps_ce_0p1_to_0p01", family="optimization", adjustment="none")
def steps_ce_0p1_to_0p01(ctx: MeasureContext) -> float:
    """Steps from training cross-entropy 0.1 to 0.01 (Jiang et al., #steps 0.1->0.01)."""
    return float(first_step_below(ctx, 0.01) - first_step_below(ctx, 0.1))


@measure("grad_noise", family="optimization")
def grad_noise(ctx: MeasureContext) -> float:
    """``E ||g_B - g||^2 = tr(Cov_x[grad l(x)]) / b``: the variance of a minibatch gradient
    of ``b = config.noise_batch_size`` examples drawn with replacement around the full
    gradient at the end of training (Jiang et al.'s gradient noise, App. C.8)."""
    stats = ctx.grad_stats
    trace = float((stats.sq_mean - stats.mean.square()).sum())
    return trace / ctx.config.noise_batch_size


@measure("fisher_rao_norm", family="optimization")
def fisher_rao_norm(ctx: MeasureContext) -> float:
    """``mean_i <w, grad_w l(f_w(x_i), y_i)>^2`` over training examples with their labels
    (Liang, Poggio, Rakhlin & Stokes 2019, Def. 2 on the empirical distribution). For a
    bias-free ReLU network of ``L + 1`` layers it equals
    ``(L + 1)^2 mean_i <dl/df, f(x_i)>^2`` (their Lemma 2.1). The directional derivative is
    one forward-mode pass (``torch.func.jvp`` along ``w``)."""
    model, (x, y) = ctx.folded, ctx.subset
    params = mu.trainable(model)
    buffers = dict(model.named_buffers())

    def losses(p: mu.Params) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (x,)), y, reduction="none")

    _, along_w = jvp(losses, (params,), (params,))
    return float(along_w.square().mean())
