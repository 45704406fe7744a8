"""Optimization-based measures (Jiang et al., ICLR 2020, App. C.8; Liang et al., AISTATS
2019).

The speed measures read ``history``: the ``(step, training cross-entropy)`` pairs recorded
during training, in step order. The gradient measures use ``config.subset`` training
examples and every parameter of the BatchNorm-folded model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from shiftbench.measures import utils as mu
from shiftbench.measures.core import MeasureContext, Undefined, measure


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
    ``(L + 1)^2 mean_i <dl/df, f(x_i)>^2`` (their Lemma 2.1). The directional derivatives
    ``J w`` (one per example) are two reverse-mode passes: ``d/du <J^T u, w>`` at ``u = 0``
    (forward-mode AD would load torch's deprecated ``torch.jit.script`` decompositions)."""
    model, (x, y) = ctx.folded, ctx.subset
    params = {k: v.requires_grad_() for k, v in mu.trainable(model).items()}
    buffers = dict(model.named_buffers())
    with torch.enable_grad():
        losses = F.cross_entropy(
            functional_call(model, (params, buffers), (x,)), y, reduction="none"
        )
        probe = torch.zeros_like(losses, requires_grad=True)
        grads = torch.autograd.grad(
            losses, list(params.values()), grad_outputs=probe, create_graph=True
        )
        along = sum((g * w.detach()).sum() for g, w in zip(grads, params.values()))
        (along_w,) = torch.autograd.grad(along, probe)
    return float(along_w.square().mean())
