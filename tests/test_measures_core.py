"""The measure engine: registry, NaN reasons, size adjustment, determinism, side effects,
and BatchNorm folding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from shiftbench.measures import core as measures
from shiftbench.measures import utils as mu
from shiftbench.measures.config import MeasureConfig
from shiftbench.spec.study import load_study

FAST = MeasureConfig(
    bisection_depth=4,
    mc_draws=2,
    subset=64,
    ascent_steps=2,
    linf_batches=4,
    hessian_batches=2,
    orthogonality_steps=4,
)


def bn_net() -> nn.Module:
    """Conv-BN-ReLU, a BN after an activation (not foldable), and Linear-BN1d."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 3),
    )


def randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen))
                mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
                mod.weight.copy_(torch.randn(mod.num_features, generator=gen))
                mod.bias.copy_(torch.randn(mod.num_features, generator=gen))
    return model


def data(n: int = 48, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(n, 1, 8, 8, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_available_lists_forty_plus_measures_in_families():
    names = measures.available()
    assert len(names) >= 40 and names == sorted(names)
    groups = measures.families()
    assert sorted(n for group in groups.values() for n in group) == names
    for family in (
        "norms",
        "spectral",
        "margin",
        "pac_bayes",
        "sharpness",
        "optimization",
        "calibration",
        "information",
        "input_gradient",
    ):
        assert groups[family], family
    assert {"log_prod_of_spec_fft", "pacbayes_mag_flatness", "ece_heldout", "tic"} <= set(names)


def test_unknown_name_is_a_clear_error():
    model, (x, y) = bn_net(), data()
    with pytest.raises(KeyError, match="no_such_measure"):
        measures.compute(model, (x, y), names=["no_such_measure"])


def test_batchnorm_folding_keeps_the_function_and_removes_foldable_bn():
    model, (x, _) = randomize_bn(bn_net()).eval(), data()
    folded = mu.fold_batchnorm(model, x[:2])
    torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
    kinds = [type(m) for m in folded]
    assert kinds.count(nn.Identity) == 3 and nn.BatchNorm2d not in kinds
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is untouched


def test_batchnorm_after_activation_is_not_folded():
    model = randomize_bn(
        nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 2))
    ).eval()
    x = torch.randn(6, 4)
    folded = mu.fold_batchnorm(model, x[:2])
    assert isinstance(folded[2], nn.BatchNorm1d)
    torch.testing.assert_close(folded(x), model(x))


def test_missing_context_gives_nan_with_reason():
    model, (x, y) = bn_net(), data()
    values, reasons = measures.compute_with_reasons(
        model, (x, y), names=["fro_dist", "steps_to_ce_0p1", "ece_heldout", "params"], config=FAST
    )
    assert math.isnan(values["fro_dist"]) and "init_model" in reasons["fro_dist"]
    assert "history" in reasons["steps_to_ce_0p1"]
    assert "heldout" in reasons["ece_heldout"]
    # the BatchNorm-folded model's weights (omega), biases excluded, not the trainable count
    folded = mu.fold_batchnorm(model, x[:2])
    weights = [p for name, p in folded.named_parameters() if not name.endswith("bias")]
    assert values["params"] == sum(p.numel() for p in weights)
    assert values["params"] < sum(p.numel() for p in model.parameters())
    assert "params" not in reasons


def test_size_adjustment_follows_jiang():
    raw = {"log_prod_of_spec": 10.0, "fro_dist": 50.0, "ece_train": 0.3, "params": -1.0}
    adjusted = measures.size_adjusted(raw, m=100)
    assert adjusted["log_prod_of_spec"] == pytest.approx(0.5 * (10.0 - math.log(100)))
    assert adjusted["fro_dist"] == pytest.approx(math.sqrt(0.5))
    assert adjusted["ece_train"] == 0.3
    assert math.isnan(adjusted["params"])


def test_full_suite_is_deterministic_and_leaves_the_model_unchanged():
    model, init = randomize_bn(bn_net()), bn_net()
    model.train()
    model[1].eval()  # a mixed mode must come back as it was
    x, y = data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    history = [(0, 1.2), (5, 0.08), (9, 0.009)]
    kwargs = dict(config=FAST, history=history, heldout_data=data(16))
    first, reasons = measures.compute_with_reasons(model, (x, y), init, **kwargs)
    second = measures.compute(model, (x, y), init, **kwargs)
    assert set(first) == set(measures.available())
    torch.testing.assert_close(
        torch.tensor(list(first.values())),
        torch.tensor([second[k] for k in first]),
        equal_nan=True,
    )
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert set(reasons) == {k for k, v in first.items() if math.isnan(v)}
    adjusted = measures.compute(
        model, (x, y), init, adjusted=True, names=["log_prod_of_fro"], config=FAST
    )
    assert adjusted["log_prod_of_fro"] == pytest.approx(
        0.5 * (first["log_prod_of_fro"] - math.log(len(x)))
    )


def test_seed_changes_random_measures_only():
    model, (x, _) = bn_net().eval(), data()
    y = model(x).argmax(1).detach()  # labels it fits, so that noise lowers its accuracy
    names = ["pacbayes_flatness", "sharpness_flatness", "log_prod_of_fro"]
    # a fine search, so that other draws move the critical scale by more than its step
    fine = dataclasses.replace(FAST, bisection_depth=12, drop_tolerance=0.0)
    a = measures.compute(model, (x, y), names=names, config=fine)
    b = measures.compute(model, (x, y), names=names, config=dataclasses.replace(fine, seed=7))
    assert a["log_prod_of_fro"] == b["log_prod_of_fro"]
    assert a["pacbayes_flatness"] != b["pacbayes_flatness"]
    assert a["sharpness_flatness"] != b["sharpness_flatness"]


def test_probes_declare_it_and_stay_out_of_all(tmp_path):
    """The training-run probes are flagged at registration, and ``measures: all`` is exactly
    the measures that are not."""

    entries = measures.registry()
    flagged = {n for n, m in entries.items() if m.probe}
    assert flagged == set(measures.families()["rotation_probes"])
    path = tmp_path / "all.yml"
    path.write_text(
        "name: all\ndatasets: {colored_digits: {}}\nsolvers: {sgd: {}}\n"
        "search: {kind: grid}\nseeds: [0]\nmeasures: all\n"
    )
    assert set(load_study(path).measures) == set(entries) - flagged
