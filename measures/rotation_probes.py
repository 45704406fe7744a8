"""Study 3's assumption probes (Zhang, Maes et al., NeurIPS 2025) as measures of the final
checkpoint, read from the trial's optimizer (``MeasureContext.optimizer``).

Each probe works in the basis the optimizer steps in (a ``RotatedOptimizer``'s rotated
basis, else the standard one), on the model in eval mode:

- ``update_orthogonality_<type>``: mean over the weight matrices of one layer type
  (``shiftbench.probes.LAYER_TYPES``) of the coefficient of variation of the singular
  values of Adam's normalized update; NaN when the model has no matrix of that type.
- ``linf_gradient_bound``: max of ||g||_inf over ``LINF_BATCHES`` training minibatches of
  ``config.noise_batch_size`` examples.
- ``hessian_11_norm``: the (1,1)-norm of the Hessian on ``config.subset`` examples,
  estimated from ``HESSIAN_SAMPLES`` sampled coordinates.
- ``adam_v_log10_q10`` / ``_q50`` / ``_q90``: quantiles of log10 of Adam's (raw) second
  moments v over its positive entries.

Every probe is NaN, with a reason, without an optimizer or for one that keeps no Adam
moments (SGD and its momentum variants).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from shiftbench import probes
from shiftbench.measures import MeasureContext, Undefined, measure
from shiftbench.rotations import RotatedOptimizer
from shiftbench.training import flat_predictions

LINF_BATCHES = 8
HESSIAN_SAMPLES = 16
FAMILY = "rotation_probes"


def adam_optimizer(ctx: MeasureContext) -> torch.optim.Optimizer:
    """The trial's optimizer, if it keeps Adam moments (raises ``Undefined`` otherwise)."""
    optimizer = ctx.optimizer
    if optimizer is None:
        raise Undefined("no optimizer given")
    inner = optimizer.base if isinstance(optimizer, RotatedOptimizer) else optimizer
    if not any("exp_avg_sq" in state for state in inner.state.values()):
        raise Undefined(f"{type(inner).__name__} keeps no Adam moments")
    return optimizer


def basis(optimizer: torch.optim.Optimizer) -> RotatedOptimizer | None:
    """The rotated basis the optimizer steps in, or None for the standard basis."""
    return optimizer if isinstance(optimizer, RotatedOptimizer) else None


def cross_entropy(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Mean cross-entropy of a (classification or sequence) batch."""
    x, y = batch
    return F.cross_entropy(*flat_predictions(model(x), y))


def orthogonality(ctx: MeasureContext, kind: str) -> float:
    """Mean update orthogonality of the weight matrices of layer type ``kind``."""
    optimizer = adam_optimizer(ctx)
    per_type = ctx.memo(
        "update_orthogonality", lambda: probes.update_orthogonality(optimizer, ctx.model)
    ).per_type
    if kind not in per_type:
        raise Undefined(f"the model has no {kind} weight matrix with Adam state")
    return per_type[kind]


def _register_orthogonality(kind: str) -> None:
    def fn(ctx: MeasureContext) -> float:
        return orthogonality(ctx, kind)

    fn.__qualname__ = fn.__name__ = f"update_orthogonality_{kind}"
    fn.__doc__ = f"Update orthogonality (singular-value CV) of the {kind} weight matrices."
    measure(fn.__name__, family=FAMILY, adjustment="none")(fn)


for _kind in probes.LAYER_TYPES:
    _register_orthogonality(_kind)


@measure("linf_gradient_bound", family=FAMILY, adjustment="none")
def linf_gradient_bound(ctx: MeasureContext) -> float:
    """Max over minibatches of the largest gradient coordinate, in the optimizer's basis."""
    optimizer = adam_optimizer(ctx)
    generator = ctx.generator("linf_gradient_bound")
    size = min(ctx.config.noise_batch_size, ctx.m)
    batches = []
    for _ in range(LINF_BATCHES):
        keep = torch.randperm(ctx.m, generator=generator, device=ctx.x.device)[:size]
        batches.append((ctx.x[keep], ctx.y[keep]))
    return probes.linf_gradient_bound(ctx.model, cross_entropy, batches, basis(optimizer))


@measure("hessian_11_norm", family=FAMILY, adjustment="none")
def hessian_11_norm(ctx: MeasureContext) -> float:
    """Estimate of the Hessian's (1,1)-norm on ``subset``, in the optimizer's basis."""
    optimizer = adam_optimizer(ctx)
    generator = torch.Generator().manual_seed(ctx.config.seed)
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
        return probes.hessian_11_norm(
            ctx.model, cross_entropy, ctx.subset, HESSIAN_SAMPLES, generator, basis(optimizer)
        )


def second_moment_quantile(ctx: MeasureContext, q: float) -> float:
    """The ``q`` quantile of log10 v over Adam's positive second moments."""
    optimizer = adam_optimizer(ctx)
    logs = ctx.memo("adam_v_log10", lambda: _log_second_moments(optimizer))
    return float(torch.quantile(logs, q))


def _log_second_moments(optimizer: torch.optim.Optimizer) -> Tensor:
    inner = optimizer.base if isinstance(optimizer, RotatedOptimizer) else optimizer
    values = torch.cat(
        [s["exp_avg_sq"].detach().reshape(-1) for s in inner.state.values() if "exp_avg_sq" in s]
    ).double()
    positive = values[values > 0]
    if positive.numel() == 0:
        raise Undefined("every second moment is zero")
    if positive.numel() > 2**24 - 1:  # torch.quantile's input limit
        positive = positive[:: math.ceil(positive.numel() / (2**24 - 1))]
    return positive.log10().cpu()


@measure("adam_v_log10_q10", family=FAMILY, adjustment="none")
def adam_v_log10_q10(ctx: MeasureContext) -> float:
    """10% quantile of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.1)


@measure("adam_v_log10_q50", family=FAMILY, adjustment="none")
def adam_v_log10_q50(ctx: MeasureContext) -> float:
    """Median of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.5)


@measure("adam_v_log10_q90", family=FAMILY, adjustment="none")
def adam_v_log10_q90(ctx: MeasureContext) -> float:
    """90% quantile of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.9)
