"""RotatedOptimizer: orthogonality, SGD equivariance, Adam's basis dependence, SVD = Muon."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from training_rotations_nets import MODEL, X, Y, make_rotated, nonzero_shadows

from shiftbench.models.registry import create_model
from shiftbench.training.rotations import SCOPES, RotatedOptimizer

STEPS = 20


def _train(make: Callable[[nn.Module], torch.optim.Optimizer], steps: int = STEPS) -> nn.Module:
    model = copy.deepcopy(MODEL)
    optimizer = make(model)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    return model


@functools.cache
def _reference(base: type, lr: float, momentum: float = 0.0) -> torch.Tensor:
    """The unrotated trajectory's end point (shared by the tests that compare to it)."""
    kwargs = {"momentum": momentum} if momentum else {}
    return _flat(_train(lambda m: base(m.parameters(), lr=lr, **kwargs)))


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_rotation_equivariant(scope: str, momentum: float) -> None:
    """Proposition 1: SGD (and heavy ball) in any fixed rotated basis is the same trajectory.
    The SVD basis is fixed after step 0 for momentum (moments are not rotated at a refresh)."""
    svd_every = 1 if momentum == 0 else 1000
    expected = _reference(torch.optim.SGD, 0.1, momentum)
    rotated = _train(
        make_rotated(scope, torch.optim.SGD, lr=0.1, momentum=momentum, svd_every=svd_every)
    )
    torch.testing.assert_close(_flat(rotated), expected, rtol=0, atol=1e-10)
    assert (_flat(rotated) - _flat(MODEL)).abs().max() > 1e-2


@pytest.mark.parametrize("scope", ["global", "layer", "output", "input", "svd"])
def test_adam_depends_on_the_basis(scope: str) -> None:
    expected = _reference(torch.optim.Adam, 0.01)
    rotated = _train(make_rotated(scope, torch.optim.Adam, lr=0.01))
    assert (_flat(rotated) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("scope", ["global", "layer", "output", "input"])
def test_adam_is_permutation_equivariant(scope: str) -> None:
    """With blocks of one coordinate the rotation is a signed permutation, which Adam's
    elementwise operations commute with."""
    expected = _reference(torch.optim.Adam, 0.01)
    rotated = _train(
        lambda m: RotatedOptimizer(
            m.parameters(), torch.optim.Adam, scope=scope, block_size=1, lr=0.01
        )
    )
    torch.testing.assert_close(_flat(rotated), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5)])
def test_svd_adam_without_moments_is_muon(shape: tuple[int, int]) -> None:
    """beta1 = beta2 = 0 and a tiny eps (eps = 0 is 0/0 off the diagonal): Adam's step on
    U^T G V = S is -lr sign(S), which maps back to -lr U V^T."""
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(shape, dtype=torch.float64, generator=generator, requires_grad=True)
    gradient = torch.randn(shape, dtype=torch.float64, generator=generator)
    before = weight.detach().clone()
    optimizer = RotatedOptimizer(
        [weight], torch.optim.Adam, scope="svd", lr=0.1, betas=(0.0, 0.0), eps=1e-9
    )
    weight.grad = gradient
    optimizer.step()
    u, _, vt = np.linalg.svd(gradient.numpy(), full_matrices=False)
    np.testing.assert_allclose((weight.detach() - before).numpy(), -0.1 * u @ vt, atol=1e-6)


@pytest.mark.parametrize("base", [torch.optim.Adam, torch.optim.AdamW])
def test_weight_decay_is_decoupled_as_adamw(base: type) -> None:
    expected = _flat(
        _train(lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.5))
    )
    rotated = _train(make_rotated("none", base, lr=0.01, weight_decay=0.5))
    torch.testing.assert_close(_flat(rotated), expected, rtol=0, atol=1e-12)


def test_weight_decay_is_applied_in_the_standard_basis() -> None:
    """SGD with zero gradient: every weight shrinks by exactly (1 - lr * wd) per step."""
    weight = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    start = weight.detach().clone()
    optimizer = RotatedOptimizer(
        [weight], torch.optim.SGD, scope="global", lr=0.1, weight_decay=0.2
    )
    for _ in range(3):
        weight.grad = torch.zeros_like(weight)
        optimizer.step()
    torch.testing.assert_close(weight.detach(), start * 0.98**3)


def test_lr_scheduler_reaches_the_base_optimizer() -> None:
    finals = []
    for rotated in (False, True):
        model = copy.deepcopy(MODEL)
        if rotated:
            optimizer = make_rotated("global", torch.optim.SGD, lr=0.1)(model)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        for _ in range(5):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            optimizer.step()
            scheduler.step()
        finals.append(_flat(model))
    torch.testing.assert_close(finals[1], finals[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("scope", ["global", "svd"])
def test_state_dict_resumes_the_same_trajectory(scope: str) -> None:
    make = make_rotated(scope, torch.optim.Adam, lr=0.01, svd_every=3)
    straight = _train(make, steps=10)
    model = _train(make, steps=0)
    optimizer = make(model)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    saved_model, saved_state = (
        copy.deepcopy(model.state_dict()),
        copy.deepcopy(optimizer.state_dict()),
    )
    resumed = copy.deepcopy(MODEL)
    resumed.load_state_dict(saved_model)
    optimizer = make(resumed)
    optimizer.load_state_dict(saved_state)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(resumed(X), Y).backward()
        optimizer.step()
    torch.testing.assert_close(_flat(resumed), _flat(straight), rtol=0, atol=1e-12)
    other_seed = RotatedOptimizer(resumed.parameters(), torch.optim.Adam, scope=scope, seed=1)
    with pytest.raises(ValueError, match="seed"):
        other_seed.load_state_dict(saved_state)


@pytest.mark.parametrize("scope", ["global", "layer", "output", "input"])
def test_rotate_is_orthogonal_and_unrotate_inverts_it(scope: str) -> None:
    model = copy.deepcopy(MODEL)
    optimizer = make_rotated(scope, torch.optim.SGD, lr=0.1)(model)
    values = {p: torch.randn_like(p) for p in model.parameters()}
    rotated = optimizer.rotate(values)
    norm = sum(v.pow(2).sum() for v in values.values())
    torch.testing.assert_close(sum(v.pow(2).sum() for v in rotated.values()), norm)
    back = optimizer.unrotate(rotated)
    for p, value in values.items():
        torch.testing.assert_close(back[p], value)


def test_output_scope_mixes_within_rows_and_input_within_columns() -> None:
    model = copy.deepcopy(MODEL)
    weight = model.fc.weight
    row, column = torch.zeros_like(weight), torch.zeros_like(weight)
    row[1], column[:, 2] = torch.randn(12, dtype=weight.dtype), torch.randn(3, dtype=weight.dtype)
    for scope, value, keep in [
        ("output", row, (1, slice(None))),
        ("input", column, (slice(None), 2)),
    ]:
        optimizer = make_rotated(scope, torch.optim.SGD, lr=0.1)(model)
        (shadow,) = nonzero_shadows(optimizer, {weight: value})
        mask = torch.ones_like(shadow, dtype=torch.bool)
        mask[keep] = False
        assert shadow[mask].abs().max() == 0
        assert not torch.allclose(shadow[keep], value[keep])


def test_layer_scope_splits_fused_qkv() -> None:
    model = copy.deepcopy(MODEL)
    optimizer = make_rotated("layer", torch.optim.SGD, lr=0.1)(model)
    assert len(optimizer.base.param_groups[0]["params"]) == 5  # emb, Q, K, V, fc
    query_only = torch.zeros_like(model.qkv.weight)
    query_only[:4] = torch.randn(4, 4, dtype=query_only.dtype)
    (shadow,) = nonzero_shadows(optimizer, {model.qkv.weight: query_only})
    assert shadow.numel() == 4 * 4 + 4  # the Q rows of the weight and of the bias
    unnamed = RotatedOptimizer(model.parameters(), torch.optim.SGD, scope="layer", lr=0.1)
    assert len(unnamed.base.param_groups[0]["params"]) == 5  # one per tensor


def _groups(model: nn.Module) -> list[dict]:
    """The head at lr 0.5, the rest at the default lr."""
    rest = list(model.emb.parameters()) + list(model.qkv.parameters())
    return [{"params": list(model.fc.parameters()), "lr": 0.5}, {"params": rest}]


def test_param_groups_keep_their_hyperparameters() -> None:
    expected = _train(lambda m: torch.optim.SGD(_groups(m), lr=0.1))
    rotated = _train(lambda m: RotatedOptimizer(_groups(m), torch.optim.SGD, lr=0.1))
    torch.testing.assert_close(_flat(rotated), _flat(expected), rtol=0, atol=1e-10)
    optimizer = RotatedOptimizer(_groups(copy.deepcopy(MODEL)), torch.optim.Adam, lr=0.1)
    assert [g["lr"] for g in optimizer.base.param_groups] == [0.5, 0.1]
    assert optimizer.param_groups[1]["betas"] == (0.9, 0.999)
    assert len(optimizer.base.param_groups[0]["params"]) == 1  # one global unit per group


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="scope"):
        RotatedOptimizer(MODEL.parameters(), torch.optim.SGD, scope="diagonal", lr=0.1)
    optimizer = RotatedOptimizer(MODEL.parameters(), torch.optim.SGD, lr=0.1)
    with pytest.raises(NotImplementedError):
        optimizer.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})


def test_step_with_a_closure_returns_its_loss_and_steps_on_its_gradient() -> None:
    model = copy.deepcopy(MODEL)
    optimizer = make_rotated("global", torch.optim.SGD, lr=0.1)(model)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(X), Y)
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss == nn.functional.cross_entropy(MODEL(X), Y)
    expected = _train(lambda m: torch.optim.SGD(m.parameters(), lr=0.1), steps=1)
    torch.testing.assert_close(_flat(model), _flat(expected), rtol=0, atol=1e-12)


def test_parameters_without_a_gradient() -> None:
    """A unit without any gradient is not stepped (no state, weights unchanged); a missing
    gradient inside a unit counts as zero (the same step as an explicit zero gradient)."""

    def train(scope: str, missing: str) -> tuple[nn.Module, RotatedOptimizer]:
        model = copy.deepcopy(MODEL)
        optimizer = make_rotated(scope, torch.optim.Adam, lr=0.01)(model)
        for _ in range(3):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(X), Y).backward()
            if missing == "none":
                model.fc.bias.grad = None
            else:
                model.fc.bias.grad.zero_()
            optimizer.step()
        return model, optimizer

    model, optimizer = train("output", "none")
    torch.testing.assert_close(model.fc.bias, MODEL.fc.bias, rtol=0, atol=0)
    shadows = optimizer.base.param_groups[0]["params"]
    assert [bool(optimizer.base.state.get(shadow)) for shadow in shadows] == [True] * 6 + [False]
    with_none, _ = train("global", "none")
    with_zero, _ = train("global", "zero")
    torch.testing.assert_close(_flat(with_none), _flat(with_zero), rtol=0, atol=0)
    assert not torch.equal(with_none.fc.bias, MODEL.fc.bias)  # the global rotation moves it


def test_sparse_gradients_are_rejected() -> None:
    table = nn.Embedding(5, 3, sparse=True)
    optimizer = RotatedOptimizer(table.parameters(), torch.optim.Adam, scope="global", lr=0.1)
    table(torch.tensor([0, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()


def test_fused_qkv_names_split_other_parameters() -> None:
    attention = nn.MultiheadAttention(4, 1)
    named = list(attention.named_parameters())
    plain = RotatedOptimizer(named, torch.optim.SGD, scope="layer", lr=0.1)
    fused = RotatedOptimizer(
        named, torch.optim.SGD, scope="layer", lr=0.1, fused_qkv={"in_proj_weight"}
    )
    sizes = sorted(p.numel() for p in plain.base.param_groups[0]["params"])
    assert sizes == [12, 20, 48]  # in_proj_bias, out_proj (weight and bias), in_proj_weight
    sizes = sorted(p.numel() for p in fused.base.param_groups[0]["params"])
    assert sizes == [12, 16, 16, 16, 20]  # Q, K, V of in_proj_weight (4 x 4 each) apart
    with pytest.raises(ValueError, match="multiple of 3"):
        RotatedOptimizer(
            [("w", torch.zeros(4, 2, requires_grad=True))],
            torch.optim.SGD,
            fused_qkv={"w"},
            lr=0.1,
        )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"scope": "layer"}, "scope"),
        ({"block_size": 4}, "block_size"),
        ({"layer_types": {"attn"}}, "layer_types"),
    ],
)
def test_state_dict_of_another_scope_or_block_size_is_refused(change: dict, match: str) -> None:
    model = copy.deepcopy(MODEL)
    settings = {"scope": "global", "block_size": 3}
    optimizer = RotatedOptimizer(model.parameters(), torch.optim.Adam, lr=0.01, **settings)
    nn.functional.cross_entropy(model(X), Y).backward()
    optimizer.step()
    other = RotatedOptimizer(
        model.parameters(), torch.optim.Adam, lr=0.01, **{**settings, **change}
    )
    with pytest.raises(ValueError, match=match):
        other.load_state_dict(optimizer.state_dict())


def test_svd_basis_refresh_keeps_the_moments_of_the_old_basis() -> None:
    """SVD-Adam with the basis recomputed every 2 steps while the moments are non-zero, against
    numpy: the moments live in whatever basis is current (not transformed at a refresh), the
    step is U (m-hat / (sqrt(v-hat) + eps)) V^T with the current U, V."""
    generator = torch.Generator().manual_seed(5)
    weight = torch.randn(4, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    grads = [torch.randn(4, 3, dtype=torch.float64, generator=generator) for _ in range(5)]
    w = weight.detach().numpy().copy()
    lr, (b1, b2), eps = 0.1, (0.9, 0.99), 1e-6  # eps >> the null space's rounding noise
    optimizer = RotatedOptimizer(
        [weight], torch.optim.Adam, scope="svd", svd_every=2, lr=lr, betas=(b1, b2), eps=eps
    )
    m = v = np.zeros((4, 3))
    for t, gradient in enumerate(grads, start=1):
        weight.grad = gradient
        optimizer.step()
        g = gradient.numpy()
        if t % 2 == 1:  # steps 0, 2, 4 (0-based) recompute the basis
            u, _, vt = np.linalg.svd(g, full_matrices=True)
        rotated = u.T @ g @ vt.T
        m, v = b1 * m + (1 - b1) * rotated, b2 * v + (1 - b2) * rotated**2
        step = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        w = w - lr * u @ step @ vt
        np.testing.assert_allclose(weight.detach().numpy(), w, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scope", ["global", "svd"])
def test_a_deep_copy_with_its_model_continues_the_same_trajectory(scope: str) -> None:
    make = make_rotated(scope, torch.optim.Adam, lr=0.01, svd_every=2)
    straight = _train(make, steps=6)
    model = copy.deepcopy(MODEL)
    optimizer = make(model)
    for step in range(6):
        if step == 3:
            model, optimizer = copy.deepcopy((model, optimizer))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(X), Y).backward()
        optimizer.step()
    torch.testing.assert_close(_flat(model), _flat(straight), rtol=0, atol=1e-12)


def test_layer_types_restrict_the_rotation_to_those_layers() -> None:
    """Rotation per layer type: a global rotation of the attention parameters only mixes them
    among themselves; every other parameter keeps the standard basis."""
    torch.manual_seed(0)
    model = create_model("timm_vit", (1, 8, 8), 4, depth=1, width=8).double()
    optimizer = RotatedOptimizer(
        model.named_parameters(),
        torch.optim.SGD,
        scope="global",
        module=model,
        layer_types={"attn"},
        lr=0.1,
    )
    attn = {p for name, p in model.named_parameters() if ".attn." in name}
    values = {p: torch.randn_like(p) for _, p in model.named_parameters()}
    rotated = optimizer.rotate(values)
    mixed = [shadow for shadow in rotated if shadow.numel() == sum(p.numel() for p in attn)]
    assert len(mixed) == 1 and len(rotated) == len(values) - len(attn) + 1
    for p, value in values.items():
        if p not in attn:  # its own unit, unrotated
            assert any(
                shadow.shape == p.shape and torch.equal(rotated[shadow], value)
                for shadow in rotated
            )
    attn_only = {p: v for p, v in values.items() if p in attn}
    torch.testing.assert_close(
        rotated[mixed[0]].norm(), torch.cat([v.flatten() for v in attn_only.values()]).norm()
    )
    with pytest.raises(ValueError, match="unknown layer types"):
        RotatedOptimizer(model.parameters(), torch.optim.SGD, layer_types={"ffn"}, lr=0.1)
