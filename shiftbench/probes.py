"""Assumption probes of Study 3, computed on a checkpoint (model + optimizer).

Zhang, Maes et al. test which rotation-dependent assumptions explain Adam's
basis sensitivity. Each probe here measures one of them, in the standard basis
or, with ``basis=`` a ``RotatedOptimizer``, in the basis that optimizer uses:

- ``update_orthogonality``: the coefficient of variation (std / mean, population
  std) of the singular values of Adam's normalized update m-hat / (sqrt(v-hat) + eps)
  mapped to the standard basis, per weight matrix and averaged per layer type;
  0 means an orthogonal update, as Muon's.
- ``linf_gradient_bound``: max over minibatches of ||g||_inf.
- ``hessian_11_norm``: an unbiased estimate of ||H||_{1,1} = sum_i ||H e_i||_1 from
  Hessian-vector products with sampled basis vectors.
- ``second_moment_histogram``: log-spaced histogram of Adam's second moments v.

``loss_fn(model, batch) -> scalar`` evaluates the model as it is: put it in eval mode
first for probes free of dropout noise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shiftbench.rotations import RotatedOptimizer

LossFn = Callable[[nn.Module, Any], Tensor]
LAYER_TYPES = ("embed", "head", "attn", "mlp", "conv", "other")


def layer_type(name: str, param: Tensor) -> str:
    """The layer type of a parameter from its name's tokens (split at ``.`` and ``_``):
    ``embed`` (a token containing "emb", wte, wpe), ``head`` (head, classifier), ``attn``
    (attn, attention, qkv), ``mlp`` (mlp, ffn, fc, fc1, fc2), ``conv`` (a 4-d kernel or a
    token starting with "conv"), else ``other``. The first rule that matches wins."""
    tokens = set(re.split(r"[._]", name.lower()))
    if any("emb" in token for token in tokens) or tokens & {"wte", "wpe"}:
        return "embed"
    if tokens & {"head", "classifier"}:
        return "head"
    if tokens & {"attn", "attention", "qkv"}:
        return "attn"
    if tokens & {"mlp", "ffn", "fc", "fc1", "fc2"}:
        return "mlp"
    if param.ndim == 4 or any(token.startswith("conv") for token in tokens):
        return "conv"
    return "other"


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
    """std / mean of the singular values of ``matrix`` viewed as (rows, rest)."""
    values = torch.linalg.svdvals(matrix.detach().reshape(matrix.shape[0], -1).double())
    return (values.std(correction=0) / values.mean()).item()


@dataclass(frozen=True)
class Orthogonality:
    """Update orthogonality: per weight-matrix name, and averaged per layer type."""

    per_param: dict[str, float]
    per_type: dict[str, float]


def update_orthogonality(
    optimizer: torch.optim.Optimizer,
    model: nn.Module,
    classify: Callable[[str, Tensor], str] = layer_type,
) -> Orthogonality:
    """The coefficient of variation of the singular values of each weight matrix's (any
    tensor of 2+ dims) normalized Adam update, named as in ``model``, and the mean per layer
    type (``classify(name, param)``; the classifier a timm model declares through
    ``get_classifier()``, such as a ResNet's ``fc``, is ``head`` whatever its name).
    Parameters without Adam state are left out."""
    updates = normalized_updates(optimizer)
    declared = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = {id(p) for p in declared.parameters()} if isinstance(declared, nn.Module) else set()
    per_param = {
        name: singular_value_cv(updates[p])
        for name, p in model.named_parameters()
        if p.ndim >= 2 and p in updates
    }
    by_type: dict[str, list[float]] = {}
    params = dict(model.named_parameters())
    for name, cv in per_param.items():
        kind = "head" if id(params[name]) in head else classify(name, params[name])
        by_type.setdefault(kind, []).append(cv)
    return Orthogonality(per_param, {kind: float(np.mean(cvs)) for kind, cvs in by_type.items()})


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


def hessian_11_norm(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    n_samples: int,
    generator: torch.Generator,
    basis: RotatedOptimizer | None = None,
) -> float:
    """Estimate ||H||_{1,1} = sum_i ||H e_i||_1 of the loss on ``batch`` as d * mean of
    ||H e_i||_1 over ``n_samples`` coordinates i drawn uniformly without replacement
    (unbiased; exact when n_samples >= d, the number of coordinates). With ``basis`` the
    Hessian is R H R^T in that optimizer's coordinates: e_i is rotated back before the
    Hessian-vector product and the product rotated forward."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
    coords = _Coordinates(params, basis)
    d = coords.size
    chosen = torch.randperm(d, generator=generator)[: min(n_samples, d)]
    total = 0.0
    for index in chosen.tolist():
        vector = coords.to_standard(coords.unit_vector(index))
        hvp = _hessian_vector_product(grads, params, vector)
        total += sum(v.abs().sum().item() for v in coords.from_standard(hvp))
    return d * total / len(chosen)


def _hessian_vector_product(
    grads: tuple[Tensor, ...], params: list[Tensor], vector: list[Tensor]
) -> list[Tensor]:
    """H v from gradients built with ``create_graph=True``; a gradient that does not depend
    on the parameters (a constant) contributes nothing."""
    pairs = [(g, v) for g, v in zip(grads, vector) if g.requires_grad]
    if not pairs:
        return [torch.zeros_like(p) for p in params]
    outputs, directions = zip(*pairs)
    products = torch.autograd.grad(
        outputs,
        params,
        grad_outputs=directions,
        retain_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )
    return list(products)


class _Coordinates:
    """The coordinates of a parameter list, standard or those of a RotatedOptimizer."""

    def __init__(self, params: list[Tensor], basis: RotatedOptimizer | None) -> None:
        self.params = params
        self.basis = basis
        self.tensors = (
            params
            if basis is None
            else [shadow for group in basis.base.param_groups for shadow in group["params"]]
        )
        self.size = sum(t.numel() for t in self.tensors)

    def unit_vector(self, index: int) -> list[Tensor]:
        vectors = [torch.zeros_like(t) for t in self.tensors]
        for vector in vectors:
            if index < vector.numel():
                vector.view(-1)[index] = 1.0
                break
            index -= vector.numel()
        return vectors

    def to_standard(self, vectors: list[Tensor]) -> list[Tensor]:
        if self.basis is None:
            return vectors
        standard = self.basis.unrotate(dict(zip(self.tensors, vectors)))
        return [standard[p] for p in self.params]

    def from_standard(self, vectors: list[Tensor]) -> list[Tensor]:
        if self.basis is None:
            return vectors
        return list(self.basis.rotate(dict(zip(self.params, vectors))).values())


@dataclass(frozen=True)
class Histogram:
    """Counts of positive values in log-spaced bins (``edges`` has one more entry than
    ``counts``; the last bin is closed), and how many values were exactly zero."""

    edges: np.ndarray
    counts: np.ndarray
    zeros: int


def second_moment_histogram(optimizer: torch.optim.Optimizer, bins: int = 50) -> Histogram:
    """Histogram of every entry of Adam's (raw, not bias-corrected) second moments v, in
    the basis the optimizer works in (a RotatedOptimizer's rotated basis), with ``bins``
    log-spaced bins from the smallest positive entry to the largest."""
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
    edges = np.geomspace(positive.min(), positive.max(), bins + 1)
    counts, _ = np.histogram(positive, bins=edges)
    return Histogram(edges=edges, counts=counts, zeros=int((values == 0).sum()))
