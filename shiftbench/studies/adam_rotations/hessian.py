"""Hessian probes of Study 3, computed on a checkpoint (model + optimizer).

Zhang, Maes et al. ask whether Adam's advantage comes from a Hessian that is nearly
block-diagonal in the standard basis, with blocks that rotations mix:

- ``hessian_11_norm``: an estimate of ||H||_{1,1} = sum_i ||H e_i||_1 of the expected
  Hessian: each sampled row H e_i is averaged over minibatches before its L1 norm (Sec. 4.1:
  r_i, the i-th row averaged over k minibatches; the L1 norm of a single minibatch's row is
  biased upward by its noise). App. B.3 reports the mean L1 norm of the sampled rows, an
  estimate of ||H||_{1,1} / d; ours is d times it, the same comparison across rotations of
  one model.
- ``hessian_block_masks``, ``block_shares``, ``block_contributions``: the partition of a
  Hessian row into the neuron / layer / other blocks of Sec. 4.1, the magnitudes of Fig. 9
  and the contributions of Table 1, along ``flat_update_direction`` (Adam's update) or
  ``random_directions``.

``loss_fn(model, batch) -> scalar`` evaluates the model as it is: put it in eval mode
first for probes free of dropout noise. The other probes (update orthogonality, L-inf
gradient bound, second-moment histogram) are in :mod:`shiftbench.studies.adam_rotations.probes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from shiftbench.studies.adam_rotations.probes import LossFn, normalized_updates
from shiftbench.training.parameter_views import FUSED_QKV_MODULES, module_layouts
from shiftbench.training.rotations import RotatedOptimizer


def mean_hessian_rows(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    n_samples: int,
    generator: torch.Generator,
    basis: RotatedOptimizer | None = None,
) -> tuple[list[int], Tensor]:
    """``n_samples`` coordinates i drawn uniformly without replacement (all of them when
    n_samples >= d) and the rows H e_i of the minibatch Hessians averaged over ``batches``,
    as a (samples, d) tensor, in ``basis``'s coordinates when given (R H R^T: e_i rotated
    back before the Hessian-vector product, the product rotated forward)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if not batches:
        raise ValueError("the Hessian probes need at least one batch")
    params = [p for p in model.parameters() if p.requires_grad]
    coords = _Coordinates(params, basis)
    chosen = torch.randperm(coords.size, generator=generator)[: min(n_samples, coords.size)]
    vectors = [coords.to_standard(coords.unit_vector(index)) for index in chosen.tolist()]
    rows = torch.zeros(len(vectors), coords.size, dtype=torch.float64)
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(model, batch), params, create_graph=True)
        for k, vector in enumerate(vectors):
            row = coords.from_standard(_hessian_vector_product(grads, params, vector))
            rows[k] += torch.cat([v.detach().reshape(-1) for v in row]).double().cpu()
    return chosen.tolist(), rows / len(batches)


def hessian_11_norm(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    n_samples: int,
    generator: torch.Generator,
    basis: RotatedOptimizer | None = None,
) -> float:
    """Estimate ||H||_{1,1} = sum_i ||H e_i||_1 of the loss's expected Hessian H as d * mean
    of ||H e_i||_1 over sampled coordinates (``mean_hessian_rows``: exact when n_samples >= d),
    each row being the mean of the minibatch Hessians' rows before its L1 norm, as Zhang,
    Maes et al. average rows over minibatches (a single minibatch's L1 norm is biased upward
    by its noise)."""
    _, rows = mean_hessian_rows(model, loss_fn, batches, n_samples, generator, basis)
    return rows.shape[1] * rows.abs().sum().item() / rows.shape[0]


HESSIAN_BLOCKS = ("neuron", "layer", "other")


def coordinate_blocks(model: nn.Module) -> tuple[Tensor, Tensor]:
    """For each coordinate of ``model``'s trainable parameters (in ``parameters()`` order):
    its layer (the parameter's module; the Q, K and V blocks of a fused weight apart) and its
    neuron (the output feature it feeds: a matrix's row under ``module_layouts``, an entry
    of a bias or norm vector), as integer ids numbered from 0 in order of appearance."""
    layouts = module_layouts(model)
    layer_keys: list[Tensor] = []
    neuron_keys: list[Tensor] = []
    modules: dict[str, int] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        layout = layouts[name]
        module = name.rpartition(".")[0] or name
        index = modules.setdefault(module, len(modules))
        if layout is None:
            features = torch.arange(p.numel())
        elif layout.table:  # the table's columns are its features
            features = torch.arange(layout.shape[1]).expand(layout.shape)
        else:
            features = torch.arange(layout.shape[0])[:, None].expand(layout.shape)
        features = features.reshape(-1)
        part = torch.zeros_like(features)
        out = p.shape[0] if p.ndim else 1
        if module.rpartition(".")[2] in FUSED_QKV_MODULES and out % 3 == 0:
            part = features // (out // 3)
        layer_keys.append(index * 3 + part)
        neuron_keys.append(index * (1 << 40) + features)
    return _dense_ids(torch.cat(layer_keys)), _dense_ids(torch.cat(neuron_keys))


def _dense_ids(keys: Tensor) -> Tensor:
    """Keys renumbered 0, 1, ... in order of first appearance."""
    unique, inverse = torch.unique(keys, return_inverse=True)
    first = torch.full((len(unique),), len(keys), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(keys)), reduce="amin")
    rank = torch.empty_like(first)
    rank[torch.argsort(first)] = torch.arange(len(unique))
    return rank[inverse]


def hessian_block_masks(model: nn.Module, chosen: Sequence[int]) -> dict[str, Tensor]:
    """For the sampled rows ``chosen`` (coordinate indices), a (rows, d) mask per block of
    Zhang, Maes et al.'s partition (Sec. 4.1, "Block-diagonality of the Hessian"): ``neuron``
    the weights leading to the same output neuron as w_i (I_N), ``layer`` the other weights
    of its layer (I_L), ``other`` the weights of other layers."""
    layer, neuron = coordinate_blocks(model)
    same_neuron = neuron[list(chosen)][:, None] == neuron[None, :]
    same_layer = (layer[list(chosen)][:, None] == layer[None, :]) & ~same_neuron
    return {"neuron": same_neuron, "layer": same_layer, "other": ~(same_neuron | same_layer)}


def block_shares(rows: Tensor, masks: Mapping[str, Tensor]) -> dict[str, float]:
    """The share of sum |H_ij| of ``rows`` in each block of ``masks``, and ``<block>_mean``,
    the mean |H_ij| of one entry of the block (the magnitudes Fig. 9 of Zhang, Maes et al.
    compares: off-diagonal blocks are small per entry but many)."""
    mass = rows.abs()
    total = mass.sum().item()
    out = {}
    for block, mask in masks.items():
        out[block] = mass[mask].sum().item() / total if total > 0 else float("nan")
        out[f"{block}_mean"] = mass[mask].mean().item() if mask.any() else float("nan")
    return out


def hessian_block_shares(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    n_samples: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """How the (1,1)-norm of the expected Hessian splits between its blocks (``block_shares``
    of ``hessian_block_masks``), in the standard basis, from ``n_samples`` rows each averaged
    over ``batches`` (``mean_hessian_rows``): where j feeds the same neuron as i (``neuron``),
    the same layer but another neuron (``layer``), or another layer (``other``)."""
    chosen, rows = mean_hessian_rows(model, loss_fn, batches, n_samples, generator)
    return block_shares(rows, hessian_block_masks(model, chosen))


def block_contributions(
    rows: Tensor, masks: Mapping[str, Tensor], directions: Tensor
) -> dict[str, float]:
    """Table 1 of Zhang, Maes et al. (Sec. 4.1, eq. after Fig. 9): the contribution
    r_i[I] . dw[I] of block I of Hessian row r_i to the change of the i-th gradient
    coordinate in direction dw, averaged over the sampled rows and the ``directions``
    ((count, d)), signed as the paper reports it (``<block>``), and its mean absolute value
    (``<block>_abs``: random directions make the signed mean cancel toward 0)."""
    out = {}
    for block, mask in masks.items():
        contributions = (rows * mask) @ directions.T.to(rows.dtype)
        out[block] = contributions.mean().item()
        out[f"{block}_abs"] = contributions.abs().mean().item()
    return out


def flat_update_direction(optimizer: torch.optim.Optimizer, model: nn.Module) -> Tensor:
    """Adam's normalized update (``normalized_updates``, in the standard basis) of ``model``'s
    trainable parameters flattened in ``parameters()`` order (0 where a tensor has no Adam
    state) and scaled to unit L2 norm: Table 1's "update" direction."""
    updates = normalized_updates(optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    flat = torch.cat(
        [updates.get(p, torch.zeros_like(p)).detach().reshape(-1).double().cpu() for p in params]
    )
    norm = flat.norm()
    if norm == 0:
        raise ValueError("Adam's update is 0 everywhere: no direction to take")
    return flat / norm


def random_directions(size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` Gaussian directions in R^size, each scaled to unit L2 norm: Table 1's
    "random" directions (the paper does not state their law or scale; unit norm makes them
    comparable with the unit update direction)."""
    gaussian = torch.randn(
        count, size, generator=generator, dtype=torch.float64, device=generator.device
    ).cpu()
    return gaussian / gaussian.norm(dim=1, keepdim=True)


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
