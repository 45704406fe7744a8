"""Assumption probes of Study 3, computed on a checkpoint (model + optimizer).

Zhang, Maes et al. test which rotation-dependent assumptions explain Adam's
basis sensitivity. Each probe here measures one of them, in the standard basis
or, with ``basis=`` a ``RotatedOptimizer``, in the basis that optimizer uses:

- ``update_orthogonality``: the coefficient of variation (std / mean, population
  std: App. C.4 derives it as the minimizer of the normalized RMS deviation of the singular
  values from a constant) of the singular values of Adam's normalized update
  A = R^T m-hat / (sqrt(v-hat) + eps) (Sec. 4.2: step size and weight decay left out),
  mapped to the standard basis, per weight matrix (a fused QKV weight as its Q, K and V
  blocks, App. C.4; each parameter viewed as a matrix by
  ``shiftbench.rotations.matrix_layout``), averaged per layer type and per transformer
  matrix role (Q, K, V, O, W1, W2); 0 means an orthogonal update, as Muon's. The paper
  writes A with the raw moments M_t, V_t ("ignoring the bias corrections", App. C.4); the
  CV is scale-invariant, so the bias-corrected A differs from it only through eps's size
  relative to sqrt(v). ``update_orthogonality_over_steps`` is the paper's estimator
  (Sec. 4.2, Fig. 10): resume training a copy for some steps (the paper: 500) and average
  each matrix's CV over them.
- ``linf_gradient_bound``: max over minibatches of ||g||_inf at the checkpoint, in the
  optimizer's basis (App. B.3, Algorithm 1: T = 1,000 minibatches).
- ``second_moment_histogram``: log-spaced histogram of Adam's second moments v.

The Hessian probes (the (1,1)-norm and the block structure of Sec. 4.1) are in
:mod:`shiftbench.studies.adam_rotations.hessian`.

``loss_fn(model, batch) -> scalar`` evaluates the model as it is: put it in eval mode
first for probes free of dropout noise.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shiftbench.training.parameter_views import (
    FUSED_QKV_MODULES,
    LAYER_TYPES,
    layer_type,
    module_layouts,
    parameter_types,
)
from shiftbench.training.rotations import RotatedOptimizer

__all__ = ["LAYER_TYPES", "layer_type"]  # the parameter views', shared with the rotations
LossFn = Callable[[nn.Module, Any], Tensor]
MATRIX_ROLES = ("q", "k", "v", "o", "w1", "w2")


def matrix_role(name: str) -> str | None:
    """A transformer weight matrix's role from its name: ``q``/``k``/``v`` for the blocks of a
    fused QKV weight (named ``<weight>:q`` etc.) or q_proj/k_proj/v_proj, ``o`` for the
    attention output (proj, c_proj, out_proj, o_proj under an attention module), ``w1``/``w2``
    for an MLP's first and second matrices (fc1/c_fc/fc/up_proj, fc2/c_proj/proj/down_proj
    under an MLP module); None for any other matrix."""
    path, _, block = name.partition(":")
    if block in ("q", "k", "v"):
        return block
    tokens = path.lower().split(".")
    module = tokens[-2] if len(tokens) > 1 else ""
    parents = set(tokens[:-2])
    if module in ("q_proj", "k_proj", "v_proj"):
        return module[0]
    if parents & {"attn", "attention", "self_attn"} and module in (
        "proj",
        "c_proj",
        "out_proj",
        "o_proj",
    ):
        return "o"
    if parents & {"mlp", "ffn"}:
        if module in ("fc1", "c_fc", "fc", "up_proj"):
            return "w1"
        if module in ("fc2", "c_proj", "proj", "down_proj"):
            return "w2"
    return None


def adam_direction(state: Mapping[str, Any], group: Mapping[str, Any]) -> Tensor | None:
    """Adam's normalized update m-hat / (sqrt(v-hat) + eps) from one tensor's state (the
    AMSGrad maximum when present), or None if the tensor has no Adam state yet."""
    if "exp_avg" not in state or "exp_avg_sq" not in state:
        return None
    step = float(state["step"])
    beta1, beta2 = group["betas"]
    second = state.get("max_exp_avg_sq", state["exp_avg_sq"])
    m_hat = state["exp_avg"] / (1 - beta1**step)
    v_hat = second / (1 - beta2**step)
    return m_hat / (v_hat.sqrt() + group["eps"])


def normalized_updates(optimizer: torch.optim.Optimizer) -> dict[Tensor, Tensor]:
    """Adam's normalized update per parameter, in the standard basis. ``optimizer`` is an
    Adam-like torch optimizer (Adam, AdamW, ...) or a RotatedOptimizer around one; the
    update is computed in the optimizer's own basis and then rotated back."""
    inner = optimizer.base if isinstance(optimizer, RotatedOptimizer) else optimizer
    directions = {}
    for group in inner.param_groups:
        for p in group["params"]:
            direction = adam_direction(inner.state.get(p, {}), group)
            if direction is not None:
                directions[p] = direction
    if not directions and any(inner.state.values()):
        raise ValueError(f"{type(inner).__name__} keeps no Adam moments (exp_avg, exp_avg_sq)")
    if isinstance(optimizer, RotatedOptimizer):
        return optimizer.unrotate(directions)
    return directions


def singular_value_cv(matrix: Tensor) -> float:
    """std / mean of the singular values of ``matrix`` (a 2-d tensor)."""
    values = torch.linalg.svdvals(matrix.detach().double())
    return (values.std(correction=0) / values.mean()).item()


@dataclass(frozen=True)
class Orthogonality:
    """Update orthogonality: per weight matrix (``name`` or ``name:q`` etc. for the blocks of
    a fused QKV weight), averaged per layer type and per matrix role (``MATRIX_ROLES``)."""

    per_param: dict[str, float]
    per_type: dict[str, float]
    per_role: dict[str, float]


def weight_matrices(model: nn.Module, updates: Mapping[Tensor, Tensor]) -> dict[str, Tensor]:
    """Each weight matrix of ``model`` with an entry in ``updates``, that entry as a matrix:
    parameters viewed by ``parameter_views.module_layouts`` (vectors, such as timm's cls_token,
    left out), fused QKV weights split into their Q, K and V row blocks."""
    layouts = module_layouts(model)
    matrices = {}
    for name, p in model.named_parameters():
        layout = layouts[name]
        if layout is None or p not in updates:
            continue
        matrix = updates[p].reshape(layout.shape)
        matrix = matrix.mT if layout.table else matrix
        if name.rpartition(".")[0].rpartition(".")[2] in FUSED_QKV_MODULES:
            for part, block in zip("qkv", matrix.chunk(3)):
                matrices[f"{name}:{part}"] = block
        else:
            matrices[name] = matrix
    return matrices


def update_orthogonality(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    classify: Callable[[str, Tensor], str] = layer_type,
) -> Orthogonality:
    """The coefficient of variation of the singular values of each weight matrix's
    (``weight_matrices``) normalized Adam update, and the means per layer type
    (``classify(name, param)``; the classifier a timm model declares through
    ``get_classifier()``, such as a ResNet's ``fc``, is ``head`` whatever its name) and per
    matrix role. Parameters without Adam state are left out."""
    updates = normalized_updates(optimizer)
    per_param = {
        name: singular_value_cv(matrix) for name, matrix in weight_matrices(model, updates).items()
    }
    return _orthogonality(model, per_param, classify)


def update_orthogonality_over_steps(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    classify: Callable[[str, Tensor], str] = layer_type,
) -> Orthogonality:
    """Zhang, Maes et al.'s estimator: resume training copies of ``model`` (in train mode)
    and ``optimizer`` for one step per batch, take ``update_orthogonality`` after each step
    and average each matrix's CV over the steps (then per type and role). ``model`` and
    ``optimizer`` are left as they are."""
    resumed_model, resumed = copy.deepcopy((model, optimizer))
    resumed_model.train()
    sums: dict[str, list[float]] = {}
    for batch in batches:
        resumed.zero_grad(set_to_none=True)
        loss_fn(resumed_model, batch).backward()
        resumed.step()
        for name, cv in update_orthogonality(resumed, resumed_model, classify).per_param.items():
            sums.setdefault(name, []).append(cv)
    if not sums:
        raise ValueError("no batch to resume training on")
    per_param = {name: float(np.mean(cvs)) for name, cvs in sums.items()}
    return _orthogonality(model, per_param, classify)


def _orthogonality(
    model: nn.Module, per_param: dict[str, float], classify: Callable[[str, Tensor], str]
) -> Orthogonality:
    types = parameter_types(model, classify)
    by_type: dict[str, list[float]] = {}
    by_role: dict[str, list[float]] = {}
    for name, cv in per_param.items():
        kind = types[name.partition(":")[0]]
        by_type.setdefault(kind, []).append(cv)
        role = matrix_role(name)
        if role is not None:
            by_role.setdefault(role, []).append(cv)
    return Orthogonality(
        per_param,
        {kind: float(np.mean(cvs)) for kind, cvs in by_type.items()},
        {role: float(np.mean(cvs)) for role, cvs in by_role.items()},
    )


def linf_gradient_bound(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Iterable[Any],
    basis: RotatedOptimizer | None = None,
) -> float:
    """max over ``batches`` of the largest absolute gradient coordinate (in ``basis``'s
    coordinates when given). Leaves the parameters' ``.grad`` untouched."""
    params = [p for p in model.parameters() if p.requires_grad]
    bound = 0.0
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), params, allow_unused=True)
        values = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        if basis is not None:
            values = list(basis.rotate(dict(zip(params, values))).values())
        bound = max(bound, max(v.abs().max().item() for v in values))
    return bound


@dataclass(frozen=True)
class Histogram:
    """Counts of positive values in log-spaced bins (``edges`` has one more entry than
    ``counts``; the last bin is closed), and how many values were exactly zero."""

    edges: np.ndarray
    counts: np.ndarray
    zeros: int


def second_moment_histogram(
    optimizer: torch.optim.Optimizer, bins: int = 50, edges: Sequence[float] | None = None
) -> Histogram:
    """Histogram of every entry of Adam's (raw, not bias-corrected) second moments v, in
    the basis the optimizer works in (a RotatedOptimizer's rotated basis), with ``bins``
    log-spaced bins from the smallest positive entry to the largest, or the given ``edges``
    (fixed, to compare runs; positive values outside them are counted in the end bins)."""
    inner = optimizer.base if isinstance(optimizer, RotatedOptimizer) else optimizer
    moments = [
        s["exp_avg_sq"].detach().reshape(-1) for s in inner.state.values() if "exp_avg_sq" in s
    ]
    if not moments:
        raise ValueError(f"{type(inner).__name__} has no second moments (exp_avg_sq) yet")
    values = torch.cat(moments).double().cpu().numpy()
    positive = values[values > 0]
    if positive.size == 0:
        raise ValueError("every second moment is zero; nothing to put on a log scale")
    if edges is None:
        bounds = np.geomspace(positive.min(), positive.max(), bins + 1)
    else:
        bounds = np.asarray(edges, dtype=np.float64)
        positive = np.clip(positive, bounds[0], bounds[-1])
    counts, _ = np.histogram(positive, bins=bounds)
    return Histogram(edges=bounds, counts=counts, zeros=int((values == 0).sum()))
