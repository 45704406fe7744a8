"""Study 3's assumption probes (Zhang, Maes et al., NeurIPS 2025) as measures of the final
checkpoint, read from the trial's optimizer (``MeasureContext.optimizer``).

Each probe works in the basis the optimizer steps in (a ``RotatedOptimizer``'s rotated
basis, else the standard one), at the paper's estimator with its sample sizes as
``MeasureConfig`` settings (a study file's ``measure_config`` records smaller ones):

- ``update_orthogonality_<type>`` / ``_<role>``: the coefficient of variation of the
  singular values of Adam's normalized update, averaged over ``orthogonality_steps`` steps
  of resumed training on minibatches of ``noise_batch_size`` training examples (a copy of
  the model and optimizer; the trial's are left as they are), then over the weight matrices
  of one layer type (``probes.LAYER_TYPES`` of :mod:`shiftbench.studies.adam_rotations.probes`) or
  one transformer matrix role (``probes.MATRIX_ROLES``: Q, K, V, O, W1, W2, a fused QKV weight
  split); NaN when the model has no such matrix.
- ``linf_gradient_bound``: max of ||g||_inf over ``linf_batches`` training minibatches of
  ``noise_batch_size`` examples, on the model in eval mode.
- ``hessian_11_norm``: the (1,1)-norm of the expected Hessian, from ``hessian_coordinates``
  sampled rows each averaged over ``hessian_batches`` minibatches of ``noise_batch_size``
  examples before its L1 norm, on the model in eval mode.
- ``hessian_<block>_share`` / ``_mean`` (block: neuron, layer, other): how the Hessian's
  magnitude splits between the paper's blocks (Sec. 4.1, Fig. 9), in the standard basis
  from the same sampled rows: the share of the (1,1)-norm, and the mean |H_ij| per entry,
  within one neuron, within one layer across neurons, and across layers.
- ``hessian_<block>_contribution_<random|update>`` and ``hessian_<block>_abs_contribution_
  <random|update>``: Table 1 itself, the contribution r_i[I] . dw of each block I of the
  same rows to the change of gradient coordinate i along a unit direction dw (random, or
  Adam's update at the checkpoint), averaged over rows and directions, signed (as the paper
  reports it) and in absolute value.
- ``adam_v_decade_m<k>`` (k = 20 ... 1): the histogram of Adam's positive second moments,
  the fraction in each decade [1e-k, 1e-k+1) (below 1e-20 and above 1 in the end decades).
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

from shiftbench.measures.core import MeasureContext, Undefined, measure
from shiftbench.studies.adam_rotations import hessian, probes
from shiftbench.training.primitives import flat_predictions
from shiftbench.training.rotations import RotatedOptimizer

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


def minibatches(ctx: MeasureContext, name: str, count: int) -> list[tuple[Tensor, Tensor]]:
    """``count`` minibatches of ``noise_batch_size`` training examples, each drawn without
    replacement, from the generator of measure ``name``."""
    generator = ctx.generator(name)
    size = min(ctx.config.noise_batch_size, ctx.m)
    batches = []
    for _ in range(count):
        keep = torch.randperm(ctx.m, generator=generator, device=ctx.x.device)[:size]
        batches.append((ctx.x[keep], ctx.y[keep]))
    return batches


def orthogonality(ctx: MeasureContext, group: str, kind: str) -> float:
    """Mean update orthogonality over resumed steps of the weight matrices of one layer
    type (``group == "type"``) or matrix role (``"role"``)."""
    optimizer = adam_optimizer(ctx)

    def resume() -> probes.Orthogonality:
        batches = minibatches(ctx, "update_orthogonality", ctx.config.orthogonality_steps)
        return probes.update_orthogonality_over_steps(optimizer, ctx.model, cross_entropy, batches)

    result = ctx.memo("update_orthogonality", resume)
    values = result.per_type if group == "type" else result.per_role
    if kind not in values:
        raise Undefined(f"the model has no {kind} weight matrix with Adam state")
    return values[kind]


def _register_orthogonality(group: str, kind: str) -> None:
    def fn(ctx: MeasureContext) -> float:
        return orthogonality(ctx, group, kind)

    fn.__qualname__ = fn.__name__ = f"update_orthogonality_{kind}"
    fn.__doc__ = f"Update orthogonality (singular-value CV) of the {kind} weight matrices."
    measure(fn.__name__, family=FAMILY, adjustment="none", probe=True)(fn)


for _kind in probes.LAYER_TYPES:
    _register_orthogonality("type", _kind)
for _role in probes.MATRIX_ROLES:
    _register_orthogonality("role", _role)


@measure("linf_gradient_bound", family=FAMILY, adjustment="none", probe=True)
def linf_gradient_bound(ctx: MeasureContext) -> float:
    """Max over minibatches of the largest gradient coordinate, in the optimizer's basis."""
    optimizer = adam_optimizer(ctx)
    batches = minibatches(ctx, "linf_gradient_bound", ctx.config.linf_batches)
    return probes.linf_gradient_bound(ctx.model, cross_entropy, batches, basis(optimizer))


@measure("hessian_11_norm", family=FAMILY, adjustment="none", probe=True)
def hessian_11_norm(ctx: MeasureContext) -> float:
    """Estimate of the expected Hessian's (1,1)-norm, in the optimizer's basis."""
    optimizer = adam_optimizer(ctx)
    batches = minibatches(ctx, "hessian_11_norm", ctx.config.hessian_batches)
    generator = torch.Generator().manual_seed(ctx.config.seed)
    with sdpa_kernel(SDPBackend.MATH):  # the fused attention kernels have no double backward
        return hessian.hessian_11_norm(
            ctx.model,
            cross_entropy,
            batches,
            ctx.config.hessian_coordinates,
            generator,
            basis(optimizer),
        )


def hessian_block_rows(ctx: MeasureContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sampled Hessian rows in the standard basis (``hessian.mean_hessian_rows`` at
    ``hessian_11_norm``'s rows and minibatches) and their block masks, computed once per
    trial. They need only the model, so they are defined for every run and on a stored model
    (``shiftbench run`` computes them after training)."""

    def rows() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batches = minibatches(ctx, "hessian_11_norm", ctx.config.hessian_batches)
        generator = torch.Generator().manual_seed(ctx.config.seed)
        with sdpa_kernel(SDPBackend.MATH):
            chosen, sampled = hessian.mean_hessian_rows(
                ctx.model, cross_entropy, batches, ctx.config.hessian_coordinates, generator
            )
        return sampled, hessian.hessian_block_masks(ctx.model, chosen)

    return ctx.memo("hessian_block_rows", rows)


def hessian_block_share(ctx: MeasureContext, key: str) -> float:
    """One entry of ``hessian.block_shares`` of the sampled rows (standard basis)."""
    sampled, masks = hessian_block_rows(ctx)
    return ctx.memo("hessian_block_shares", lambda: hessian.block_shares(sampled, masks))[key]


def _register_hessian_block(key: str) -> None:
    def fn(ctx: MeasureContext) -> float:
        return hessian_block_share(ctx, key)

    block, _, mean = key.partition("_")
    fn.__qualname__ = fn.__name__ = f"hessian_{block}_{'mean' if mean else 'share'}"
    fn.__doc__ = (
        f"Mean |H_ij| of one {block}-block entry of the Hessian (standard basis)."
        if mean
        else f"Share of the Hessian's (1,1)-norm in its {block} blocks (standard basis)."
    )
    measure(fn.__name__, family=FAMILY, adjustment="none", probe=True)(fn)


for _block in hessian.HESSIAN_BLOCKS:
    _register_hessian_block(_block)
    _register_hessian_block(f"{_block}_mean")


RANDOM_DIRECTIONS = 16  # Table 1's random directions dw: the paper says "multiple"; ours


def hessian_block_contribution(ctx: MeasureContext, direction: str, key: str) -> float:
    """One entry of ``hessian.block_contributions`` (Table 1 of Zhang, Maes et al.) of the
    sampled rows along ``direction``: ``random`` (``RANDOM_DIRECTIONS`` unit Gaussian
    directions from the measure's generator) or ``update`` (Adam's normalized update at the
    checkpoint, in the standard basis, at unit norm)."""
    sampled, masks = hessian_block_rows(ctx)

    def contributions() -> dict[str, float]:
        if direction == "update":
            directions = hessian.flat_update_direction(adam_optimizer(ctx), ctx.model)[None, :]
        else:
            generator = ctx.generator("hessian_contribution_random")
            directions = hessian.random_directions(sampled.shape[1], RANDOM_DIRECTIONS, generator)
        return hessian.block_contributions(sampled, masks, directions)

    return ctx.memo(f"hessian_block_contributions_{direction}", contributions)[key]


def _register_hessian_contribution(direction: str, key: str) -> None:
    def fn(ctx: MeasureContext) -> float:
        return hessian_block_contribution(ctx, direction, key)

    block, _, absolute = key.partition("_")
    kind = "abs_contribution" if absolute else "contribution"
    fn.__qualname__ = fn.__name__ = f"hessian_{block}_{kind}_{direction}"
    fn.__doc__ = (
        f"Table 1: {'mean |r_i[I] . dw|' if absolute else 'mean r_i[I] . dw'} of the {block} "
        f"block I of sampled Hessian rows, dw the {direction} direction (standard basis)."
    )
    measure(fn.__name__, family=FAMILY, adjustment="none", probe=True)(fn)


for _direction in ("random", "update"):
    for _block in hessian.HESSIAN_BLOCKS:
        _register_hessian_contribution(_direction, _block)
        _register_hessian_contribution(_direction, f"{_block}_abs")


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


V_DECADES = range(-20, 0)  # the decades [10^k, 10^(k+1)) of the second-moment histogram


def second_moment_decade(ctx: MeasureContext, decade: int) -> float:
    """The fraction of Adam's positive second moments in [10^decade, 10^(decade+1)), the
    first and last decade of ``V_DECADES`` taking everything below and above them."""
    optimizer = adam_optimizer(ctx)
    edges = [10.0**k for k in (*V_DECADES, V_DECADES[-1] + 1)]
    histogram = ctx.memo(
        "adam_v_histogram", lambda: probes.second_moment_histogram(optimizer, edges=edges)
    )
    return float(histogram.counts[decade - V_DECADES[0]] / histogram.counts.sum())


def _register_decade(decade: int) -> None:
    def fn(ctx: MeasureContext) -> float:
        return second_moment_decade(ctx, decade)

    fn.__qualname__ = fn.__name__ = f"adam_v_decade_m{-decade}"
    fn.__doc__ = f"Fraction of Adam's positive second moments in [1e{decade}, 1e{decade + 1})."
    measure(fn.__name__, family=FAMILY, adjustment="none", probe=True)(fn)


for _decade in V_DECADES:
    _register_decade(_decade)


@measure("adam_v_log10_q10", family=FAMILY, adjustment="none", probe=True)
def adam_v_log10_q10(ctx: MeasureContext) -> float:
    """10% quantile of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.1)


@measure("adam_v_log10_q50", family=FAMILY, adjustment="none", probe=True)
def adam_v_log10_q50(ctx: MeasureContext) -> float:
    """Median of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.5)


@measure("adam_v_log10_q90", family=FAMILY, adjustment="none", probe=True)
def adam_v_log10_q90(ctx: MeasureContext) -> float:
    """90% quantile of log10 of Adam's second moments."""
    return second_moment_quantile(ctx, 0.9)
