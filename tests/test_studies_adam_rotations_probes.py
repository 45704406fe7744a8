"""Assumption probes against independent computations (numpy SVD, exact Hessians)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from shiftbench.models.registry import create_model
from shiftbench.studies.adam_rotations.probes import (
    coordinate_blocks,
    hessian_11_norm,
    hessian_block_shares,
    layer_type,
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


def test_layer_type_from_names() -> None:
    cases = {
        "transformer.wte.weight": "embed",
        "tok_embeddings.weight": "embed",
        "lm_head.weight": "head",
        "blocks.0.attn.qkv.weight": "attn",
        "h.1.attn.c_attn.weight": "attn",
        "blocks.0.mlp.fc1.weight": "mlp",
        "h.0.mlp.c_proj.weight": "mlp",
        "features.3.weight": "conv",
        "layer1.0.conv1.weight": "conv",
        "patch_embed.proj.weight": "embed",
        "0.weight": "other",
    }
    for name, expected in cases.items():
        param = torch.zeros(2, 2, 3, 3) if name == "features.3.weight" else torch.zeros(2, 2)
        assert layer_type(name, param) == expected, name


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


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(4, 12, bias=False)


class FusedLayer(nn.Module):
    """One fused QKV weight and a loss <W, C>: the gradient is C at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()


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
