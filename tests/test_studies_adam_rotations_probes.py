"""Assumption probes against independent computations (numpy SVD, exact Hessians)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from studies_adam_rotations_nets import FusedLayer
from torch import nn

from shiftbench.models.registry import create_model
from shiftbench.studies.adam_rotations.probes import (
    linf_gradient_bound,
    matrix_role,
    second_moment_histogram,
    update_orthogonality,
    update_orthogonality_over_steps,
)
from shiftbench.training.rotations import RotatedOptimizer


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 7)
        self.proj = nn.Linear(7, 5)


class Net(nn.Module):
    """Names that cover every layer type: emb, attn.qkv, mlp.fc, mlp.proj, head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 4)
        self.attn = Block()
        self.mlp = Mlp()
        self.head = nn.Linear(5, 3)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.attn.qkv(self.emb(idx)))
        return self.head(torch.tanh(self.mlp.proj(torch.tanh(self.mlp.fc(h)))))


def _net() -> Net:
    torch.manual_seed(0)
    return Net().double()


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    idx = torch.cat([torch.arange(6), torch.randint(0, 6, (26,), generator=generator)])
    return idx, torch.randint(0, 3, (32,), generator=generator)


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> dict[str, np.ndarray]:
    optimizer.zero_grad()
    _loss(model, _batch(seed)).backward()
    grads = {name: p.grad.numpy().copy() for name, p in model.named_parameters()}
    optimizer.step()
    return grads


def _cv(matrix: np.ndarray) -> float:
    values = np.linalg.svd(matrix.reshape(matrix.shape[0], -1), compute_uv=False)
    return float(values.std() / values.mean())


def test_update_orthogonality_matches_numpy_adam() -> None:
    model = _net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    g1, g2 = _step(model, optimizer, 1), _step(model, optimizer, 2)
    result = update_orthogonality(optimizer, model)
    expected = {}
    for name in (
        "emb.weight",
        "attn.qkv.weight",
        "mlp.fc.weight",
        "mlp.proj.weight",
        "head.weight",
    ):
        m_hat = (0.9 * 0.1 * g1[name] + 0.1 * g2[name]) / (1 - 0.9**2)
        v_hat = (0.99 * 0.01 * g1[name] ** 2 + 0.01 * g2[name] ** 2) / (1 - 0.99**2)
        update = m_hat / (np.sqrt(v_hat) + 1e-8)
        if name == "attn.qkv.weight":  # fused: its Q, K and V row blocks are three matrices
            for i, part in enumerate("qkv"):
                expected[f"{name}:{part}"] = _cv(update[4 * i : 4 * (i + 1)])
        else:
            expected[name] = _cv(update)
    assert result.per_param.keys() == expected.keys()
    for name, cv in expected.items():
        assert result.per_param[name] == pytest.approx(cv, rel=1e-9)
    assert result.per_type["mlp"] == pytest.approx(
        (expected["mlp.fc.weight"] + expected["mlp.proj.weight"]) / 2
    )
    assert result.per_type["embed"] == pytest.approx(expected["emb.weight"])
    assert set(result.per_type) == {"embed", "attn", "mlp", "head"}
    assert result.per_role == pytest.approx(
        {
            "q": expected["attn.qkv.weight:q"],
            "k": expected["attn.qkv.weight:k"],
            "v": expected["attn.qkv.weight:v"],
            "w1": expected["mlp.fc.weight"],
            "w2": expected["mlp.proj.weight"],
        }
    )


def test_a_timm_models_declared_classifier_is_the_head() -> None:
    """timm's ResNet names its classifier ``fc``; ``get_classifier()`` makes it the head."""
    model = create_model("timm_resnet", (1, 8, 8), 4, depth=1, width=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(8, 1, 8, 8)).logsumexp(1).sum().backward()
    optimizer.step()
    result = update_orthogonality(optimizer, model)
    assert result.per_type["head"] == pytest.approx(result.per_param["fc.weight"])
    assert set(result.per_type) == {"conv", "head"}


def test_svd_rotated_adam_update_is_orthogonal() -> None:
    """Without moments, SVD-rotated Adam's update is U V^T: all singular values are 1."""
    model = _net()
    optimizer = RotatedOptimizer(
        model.named_parameters(),
        torch.optim.Adam,
        scope="svd",
        module=model,
        lr=0.01,
        betas=(0.0, 0.0),
        eps=1e-10,
    )
    _step(model, optimizer, 1)
    rotated = update_orthogonality(optimizer, model)
    plain_model = _net()
    plain = torch.optim.Adam(plain_model.parameters(), lr=0.01, betas=(0.0, 0.0), eps=1e-10)
    _step(plain_model, plain, 1)
    reference = update_orthogonality(plain, plain_model)
    # rank-deficient gradients keep zero singular values, so these are left out: mlp.fc
    # (six distinct inputs for 7 rows) and head (softmax gradients sum to zero over classes)
    for name in ("attn.qkv.weight:q", "mlp.proj.weight", "emb.weight"):
        assert rotated.per_param[name] == pytest.approx(0.0, abs=1e-4), name
        assert reference.per_param[name] > 0.05, name


def test_linf_gradient_bound_is_the_largest_gradient_entry() -> None:
    model = _net()
    batches = [_batch(seed) for seed in range(3)]
    expected = 0.0
    for batch in batches:
        model.zero_grad()
        _loss(model, batch).backward()
        expected = max(expected, max(p.grad.abs().max().item() for p in model.parameters()))
    model.zero_grad(set_to_none=True)
    assert linf_gradient_bound(model, _loss, batches) == pytest.approx(expected, rel=1e-12)
    assert all(p.grad is None for p in model.parameters())
    permuted = RotatedOptimizer(model.parameters(), torch.optim.Adam, scope="global", block_size=1)
    assert linf_gradient_bound(model, _loss, batches, basis=permuted) == pytest.approx(expected)


def test_second_moment_histogram_counts_log_bins() -> None:
    values = torch.tensor([1e-8, 3e-7, 2e-6, 1e-4, 0.0], dtype=torch.float64)
    weight = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    optimizer = torch.optim.Adam([weight], lr=0.1, betas=(0.9, 0.0))
    weight.grad = values.sqrt()
    optimizer.step()
    histogram = second_moment_histogram(optimizer, bins=2)
    np.testing.assert_allclose(histogram.edges, [1e-8, 1e-6, 1e-4], rtol=1e-12)
    assert histogram.counts.tolist() == [2, 2]
    assert histogram.zeros == 1
    # fixed edges: values beyond them count in the end bins
    histogram = second_moment_histogram(optimizer, edges=[1e-7, 1e-6, 1e-5])
    assert histogram.counts.tolist() == [2, 2] and histogram.zeros == 1


def test_second_moment_histogram_of_a_rotated_optimizer_uses_its_basis() -> None:
    """With beta2 = 0, v = (R g)^2 and its entries sum to ||g||^2 over d = 5 entries."""
    weight = nn.Parameter(torch.zeros(5, dtype=torch.float64))
    optimizer = RotatedOptimizer(
        [weight], torch.optim.Adam, scope="global", lr=0.1, betas=(0.9, 0.0)
    )
    weight.grad = torch.tensor([1e-4, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    optimizer.step()
    histogram = second_moment_histogram(optimizer, bins=4)
    assert histogram.counts.sum() + histogram.zeros == 5
    assert histogram.counts.sum() >= 2  # the rotation spreads one coordinate over several
    state = next(iter(optimizer.base.state.values()))
    assert state["exp_avg_sq"].sum().item() == pytest.approx(1e-8)


def test_probes_reject_optimizers_without_adam_state() -> None:
    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    _step(model, optimizer, 0)
    with pytest.raises(ValueError, match="Adam moments"):
        update_orthogonality(optimizer, copy.deepcopy(model))
    with pytest.raises(ValueError, match="second moments"):
        second_moment_histogram(optimizer)


def test_orthogonality_over_steps_on_a_layer_with_a_known_update_spectrum() -> None:
    """With a constant gradient C, Adam's normalized update is C / (|C| + eps) = sign(C) at
    every step: Q = a rank-one sign pattern (singular values 2, 0, 0, 0: CV sqrt(3)), K = a
    Hadamard matrix (orthogonal up to scale: CV 0), V = blockdiag(ones(2, 2), 1, 1)
    (singular values 2, 1, 1, 0: CV sqrt(1/2))."""
    a, b = torch.tensor([1.0, -2.0, 3.0, -1.0]), torch.tensor([2.0, 1.0, -1.0, 3.0])
    hadamard = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    blocks = torch.block_diag(3 * torch.ones(2, 2), torch.tensor([[2.0]]), torch.tensor([[5.0]]))
    target = torch.cat([torch.outer(a, b), 2.0 * hadamard, blocks]).double()
    model = FusedLayer().double()
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-10)

    def loss(m: nn.Module, _: object) -> torch.Tensor:
        return (m.attn.qkv.weight * target).sum()

    result = update_orthogonality_over_steps(optimizer, model, loss, [None] * 4)
    assert result.per_role == pytest.approx({"q": 3**0.5, "k": 0.0, "v": 0.5**0.5}, abs=1e-7)
    assert result.per_type == pytest.approx({"attn": (3**0.5 + 0.5**0.5) / 3}, abs=1e-7)
    assert set(result.per_param) == {f"attn.qkv.weight:{part}" for part in "qkv"}
    assert not optimizer.state  # resumed on copies
    torch.testing.assert_close(model.state_dict(), before, rtol=0, atol=0)
    with pytest.raises(ValueError, match="batch"):
        update_orthogonality_over_steps(optimizer, model, loss, [])


def test_matrix_roles_of_gpt_and_timm_names() -> None:
    roles = {
        "blocks.0.attn.qkv.weight:q": "q",
        "blocks.0.attn.qkv.weight:v": "v",
        "blocks.0.attn.proj.weight": "o",
        "blocks.0.mlp.fc.weight": "w1",
        "blocks.0.mlp.proj.weight": "w2",
        "blocks.0.mlp.fc1.weight": "w1",
        "blocks.0.mlp.fc2.weight": "w2",
        "h.0.attn.c_proj.weight": "o",
        "h.0.mlp.c_fc.weight": "w1",
        "h.0.mlp.c_proj.weight": "w2",
        "layers.0.self_attn.k_proj.weight": "k",
        "head.weight": None,
        "patch_embed.proj.weight": None,
    }
    assert {name: matrix_role(name) for name in roles} == roles


def test_vit_positional_table_is_a_matrix_and_cls_token_a_vector() -> None:
    """pos_embed (1, N, D) is an N x D table (several singular values, so a CV that is not
    identically 0); cls_token (1, 1, D) is a vector and has no singular-value CV."""
    model = create_model("timm_vit", (1, 8, 8), 4, depth=1, width=8).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 1, 8, 8, dtype=torch.float64)).logsumexp(1).sum().backward()
    optimizer.step()
    result = update_orthogonality(optimizer, model)
    assert "cls_token" not in result.per_param
    assert result.per_param["pos_embed"] > 0.01
