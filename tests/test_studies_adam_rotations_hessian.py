"""Hessian probes against independent computations (exact Hessians, hand-labelled blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from studies_adam_rotations_nets import FusedLayer
from torch import nn
from torch.func import functional_call

from shiftbench.models.registry import create_model
from shiftbench.studies.adam_rotations.hessian import (
    coordinate_blocks,
    hessian_11_norm,
    hessian_block_shares,
)
from shiftbench.training.rotations import RotatedOptimizer


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _exact_hessian(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        tensors = vector.split([s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, tensors, shapes)}
        return nn.functional.cross_entropy(functional_call(model, params, (batch[0],)), batch[1])

    return torch.autograd.functional.hessian(loss_of, flat)


def _tiny() -> tuple[nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    """A 26-parameter MLP and a batch, small enough for an exact Hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    return model, (torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,)))


def test_hessian_11_norm_with_every_coordinate_is_exact() -> None:
    model, batch = _tiny()
    hessian = _exact_hessian(model, batch)
    d = hessian.shape[0]
    estimate = hessian_11_norm(model, _loss, [batch], d, torch.Generator().manual_seed(0))
    assert estimate == pytest.approx(hessian.abs().sum().item(), rel=1e-9)
    rotated = RotatedOptimizer(model.parameters(), torch.optim.Adam, scope="global", block_size=8)
    columns = []
    for j in range(d):
        unit = torch.zeros(d, dtype=torch.float64)
        unit[j] = 1.0
        pieces = unit.split([p.numel() for p in model.parameters()])
        values = {p: piece.reshape(p.shape) for p, piece in zip(model.parameters(), pieces)}
        columns.append(torch.cat([v.reshape(-1) for v in rotated.rotate(values).values()]))
    rotation = torch.stack(columns, dim=1)
    torch.testing.assert_close(rotation @ rotation.T, torch.eye(d, dtype=torch.float64))
    exact = (rotation @ hessian @ rotation.T).abs().sum().item()
    estimate = hessian_11_norm(model, _loss, [batch], d, torch.Generator(), basis=rotated)
    assert estimate == pytest.approx(exact, rel=1e-9)
    assert exact > 1.1 * hessian.abs().sum().item()


def test_hessian_11_norm_sampled_on_a_scaled_identity() -> None:
    """H = c I has equal columns, so any sample gives c * d; a subsample is reproducible."""
    weight = nn.Parameter(torch.randn(4, 5, dtype=torch.float64))
    model = nn.ParameterList([weight])
    estimate = hessian_11_norm(
        model, lambda m, _: 1.5 * m[0].pow(2).sum(), [None], 3, torch.Generator().manual_seed(0)
    )
    assert estimate == pytest.approx(3.0 * 20)
    net, batch = _tiny()
    first = hessian_11_norm(net, _loss, [batch], 5, torch.Generator().manual_seed(7))
    again = hessian_11_norm(net, _loss, [batch], 5, torch.Generator().manual_seed(7))
    assert first == again


def test_hessian_11_norm_averages_rows_over_minibatches_before_the_l1_norm() -> None:
    """Quadratic minibatch losses w^T A_b w / 2 have Hessians A_b: the estimate is the
    (1,1)-norm of their mean, not the (larger) mean of their (1,1)-norms."""
    hessians = [
        torch.tensor([[2.0, 1.0, -1.0], [1.0, 3.0, 0.5], [-1.0, 0.5, 1.0]], dtype=torch.float64),
        torch.tensor([[2.0, -1.0, 1.0], [-1.0, 1.0, 0.5], [1.0, 0.5, 1.0]], dtype=torch.float64),
    ]
    weight = nn.Parameter(torch.randn(3, dtype=torch.float64))
    model = nn.ParameterList([weight])

    def loss(m: nn.Module, hessian: torch.Tensor) -> torch.Tensor:
        return 0.5 * m[0] @ hessian @ m[0]

    estimate = hessian_11_norm(model, loss, hessians, 3, torch.Generator().manual_seed(0))
    mean = (hessians[0] + hessians[1]) / 2  # [[2, 0, 0], [0, 2, 0.5], [0, 0.5, 1]]
    assert estimate == pytest.approx(mean.abs().sum().item()) == pytest.approx(6.0)
    per_batch = sum(h.abs().sum().item() for h in hessians) / 2
    assert per_batch == pytest.approx(10.0)
    with pytest.raises(ValueError, match="batch"):
        hessian_11_norm(model, loss, [], 3, torch.Generator())


def test_hessian_block_shares_split_the_exact_hessian_by_neuron_and_layer() -> None:
    """The 26 coordinates of Linear(3, 4) -> Linear(4, 2), labelled by hand: a weight row and
    its bias entry feed one neuron; every coordinate sampled, so the shares are exact."""
    model, batch = _tiny()
    neuron = np.array(
        [o for o in range(4) for _ in range(3)]
        + list(range(4))
        + [4 + o for o in range(2) for _ in range(4)]
        + [4, 5]
    )
    layer = np.array([0] * 16 + [1] * 10)
    got_layer, got_neuron = coordinate_blocks(model)
    assert got_neuron.tolist() == neuron.tolist() and got_layer.tolist() == layer.tolist()
    hessian = np.abs(_exact_hessian(model, batch).numpy())
    same_neuron = neuron[:, None] == neuron[None, :]
    same_layer = (layer[:, None] == layer[None, :]) & ~same_neuron
    other = ~(same_neuron | same_layer)
    shares = hessian_block_shares(model, _loss, [batch], 26, torch.Generator().manual_seed(0))
    for block, mask in (("neuron", same_neuron), ("layer", same_layer), ("other", other)):
        assert shares[block] == pytest.approx(hessian[mask].sum() / hessian.sum(), rel=1e-9)
        assert shares[f"{block}_mean"] == pytest.approx(hessian[mask].mean(), rel=1e-9)
    assert shares["neuron"] + shares["layer"] + shares["other"] == pytest.approx(1.0)


def test_coordinate_blocks_of_fused_qkv_and_vit_tables() -> None:
    model = FusedLayer()
    layer, neuron = coordinate_blocks(model)
    assert layer.reshape(12, 4)[:, 0].tolist() == [0] * 4 + [1] * 4 + [2] * 4  # Q, K, V apart
    assert neuron.reshape(12, 4).tolist() == [[o] * 4 for o in range(12)]
    vit = create_model("timm_vit", (1, 8, 8), 4, depth=1, width=8)
    names = [name for name, _ in vit.named_parameters()]
    sizes = [p.numel() for p in vit.parameters()]
    start = sum(sizes[: names.index("pos_embed")])
    _, neuron = coordinate_blocks(vit)
    table = neuron[start : start + sizes[names.index("pos_embed")]].reshape(17, 8)
    assert (table == table[0]).all() and len(set(table[0].tolist())) == 8  # one per feature
