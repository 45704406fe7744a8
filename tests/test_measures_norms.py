"""Norm, margin and path-norm measures against closed forms on small MLPs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shiftbench.measures import core as measures
from shiftbench.measures.config import MeasureConfig


def mlp(seed: int, bias: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7, bias=bias), nn.ReLU(), nn.Linear(7, 3, bias=bias))


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 5, generator=gen)
    return x, mlp(0)(x).argmax(1).detach()  # labels the model fits: margins are positive


def test_norms_match_closed_forms():
    model, init, (x, y) = mlp(0), mlp(1), data()
    v = measures.compute(
        model,
        (x, y),
        init,
        names=[
            "params",
            "l2",
            "l2_dist",
            "param_norm",
            "fro_dist",
            "log_prod_of_fro",
            "log_sum_of_fro",
            "log_prod_of_fro_over_margin",
            "log_sum_of_fro_over_margin",
            "inverse_margin",
        ],
    )
    w = [model[0].weight.detach(), model[2].weight.detach()]
    w0 = [init[0].weight.detach(), init[2].weight.detach()]
    fro = [float((a**2).sum()) for a in w]
    logits = model(x).detach()
    margins = sorted(
        float(row[label] - torch.cat([row[:label], row[label + 1 :]]).max())
        for row, label in zip(logits, y)
    )
    gamma = margins[math.ceil(0.1 * len(x)) - 1]
    assert v["params"] == 5 * 7 + 7 * 3  # weights only, as the reference
    assert v["l2"] == pytest.approx(math.sqrt(sum(fro)), rel=1e-5)
    assert v["l2_dist"] == pytest.approx(
        math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(w, w0))), rel=1e-5
    )
    assert v["param_norm"] == pytest.approx(sum(fro), rel=1e-5)
    assert v["fro_dist"] == pytest.approx(v["l2_dist"] ** 2, rel=1e-5)
    assert v["log_prod_of_fro"] == pytest.approx(math.log(fro[0] * fro[1]), rel=1e-5)
    assert v["log_sum_of_fro"] == pytest.approx(math.log(2 * math.sqrt(fro[0] * fro[1])), rel=1e-5)
    assert v["inverse_margin"] == pytest.approx(1 / gamma**2, rel=1e-4)
    assert v["log_prod_of_fro_over_margin"] == pytest.approx(
        math.log(fro[0] * fro[1] / gamma**2), rel=1e-4
    )
    assert v["log_sum_of_fro_over_margin"] == pytest.approx(
        math.log(2) + 0.5 * math.log(fro[0] * fro[1] / gamma**2), rel=1e-4
    )


def test_negative_margin_is_undefined_with_the_papers_margin():
    model, (x, y) = mlp(0), data()
    values, reasons = measures.compute_with_reasons(
        model, (x, (y + 1) % 3), names=["inverse_margin"], config=MeasureConfig(margin="paper")
    )
    assert math.isnan(values["inverse_margin"]) and "margin" in reasons["inverse_margin"]


def test_margin_is_the_references_absolute_m_div_10_th_smallest():
    # the reference's _margin: kthvalue(m // 10) of f_y - max_{j != y} f_j, then .abs();
    # with m = 45, the 4th smallest (ceil(0.1 m) would take the 5th); wrong labels make it < 0
    model, (x, y) = mlp(0), data()
    x, y = x[:45], (y[:45] + 1) % 3
    logits = model(x).detach()
    by_hand = sorted(
        float(row[label] - torch.cat([row[:label], row[label + 1 :]]).max())
        for row, label in zip(logits, y)
    )
    assert by_hand[3] < 0 and by_hand[3] != by_hand[4]
    v = measures.compute(model, (x, y), names=["inverse_margin"])
    assert v["inverse_margin"] == pytest.approx(1 / by_hand[3] ** 2, rel=1e-5)
    paper = measures.compute(
        model, (x, y), names=["inverse_margin"], config=MeasureConfig(margin="paper")
    )
    assert math.isnan(paper["inverse_margin"])


def test_path_norm_is_the_sum_over_paths_of_squared_weights():
    model, (x, _) = mlp(0, bias=False), data()
    y = model(x).argmax(1).detach()
    w1, w2 = model[0].weight.detach(), model[2].weight.detach()
    expected = float((w2**2 @ w1**2).sum())  # sum_{k,j,i} w2[k,j]^2 w1[j,i]^2
    v = measures.compute(
        model, (x, y), names=["path_norm", "path_norm_over_margin", "inverse_margin"]
    )
    assert v["path_norm"] == pytest.approx(expected, rel=1e-5)
    assert v["path_norm_over_margin"] == pytest.approx(expected * v["inverse_margin"], rel=1e-5)


def test_path_norm_and_balanced_norms_are_relu_rescaling_invariant():
    model, (x, y) = mlp(0), data()
    scaled = mlp(0)
    c = torch.linspace(0.2, 5.0, 7)  # per hidden unit: f is unchanged for ReLU
    with torch.no_grad():
        scaled[0].weight.mul_(c[:, None])
        scaled[0].bias.mul_(c)
        scaled[2].weight.div_(c[None, :])
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-5, atol=1e-5)
    names = ["path_norm", "log_prod_of_fro", "inverse_margin"]
    a, b = (
        measures.compute(model, (x, y), names=names),
        measures.compute(scaled, (x, y), names=names),
    )
    assert b["path_norm"] == pytest.approx(a["path_norm"], rel=1e-4)
    assert b["inverse_margin"] == pytest.approx(a["inverse_margin"], rel=1e-4)
    assert b["log_prod_of_fro"] != pytest.approx(a["log_prod_of_fro"], rel=1e-2)


def test_path_norm_is_undefined_with_group_norm():
    model = nn.Sequential(nn.Linear(5, 8), nn.GroupNorm(2, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = data()
    values, reasons = measures.compute_with_reasons(
        model, (x, y), names=["path_norm", "param_norm"]
    )
    assert math.isnan(values["path_norm"]) and "normalization" in reasons["path_norm"]
    assert values["param_norm"] == pytest.approx(
        float((model[0].weight ** 2).sum() + (model[3].weight ** 2).sum()), rel=1e-5
    )


def test_one_parameter_count_for_params_aic_bic_and_the_magnitude_bounds():
    # Linear(5, 7) + BatchNorm(7) + Linear(7, 3): 80 trainable parameters; folding the
    # BatchNorm's scale and shift into the first layer leaves 35 + 7 + 21 + 3 = 66, of
    # which 35 + 21 = 56 are weights: the reference's num_params, omega
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7), nn.ReLU(), nn.Linear(7, 3))
    model.eval()
    x, y = torch.randn(30, 5), torch.randint(0, 3, (30,))
    assert sum(p.numel() for p in model.parameters()) == 80
    v = measures.compute(model, (x, y), names=["params", "aic", "bic", "nll_train"])
    assert v["params"] == 56
    log_lik = -30 * v["nll_train"]
    assert v["aic"] == pytest.approx(2 * 56 - 2 * log_lik, rel=1e-5)
    assert v["bic"] == pytest.approx(56 * math.log(30) - 2 * log_lik, rel=1e-5)
    ctx = measures.MeasureContext(model, (x, y))
    assert ctx.omega == ctx.offsets(from_init=False).numel() == 56
