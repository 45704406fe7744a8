"""Optimization-based measures, information criteria and the input-gradient norm against
independent computations on softmax regression and a bias-free ReLU network."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftbench.measures import core as measures
from shiftbench.measures.config import MeasureConfig


def data(n: int = 30, d: int = 4, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=gen), torch.randint(0, k, (n,), generator=gen)


def softmax_regression() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_steps_from_history():
    model, (x, y) = softmax_regression(), data()
    history = [(0, 2.3), (10, 0.5), (20, 0.1), (30, 0.05), (40, 0.011), (50, 0.009)]
    v = measures.compute(
        model, (x, y), names=["steps_to_ce_0p1", "steps_ce_0p1_to_0p01"], history=history
    )
    assert v == {"steps_to_ce_0p1": 20.0, "steps_ce_0p1_to_0p01": 30.0}
    values, reasons = measures.compute_with_reasons(
        model, (x, y), names=["steps_ce_0p1_to_0p01"], history=history[:4]
    )
    assert math.isnan(values["steps_ce_0p1_to_0p01"])
    assert "0.01" in reasons["steps_ce_0p1_to_0p01"]


def explicit_gradients(model: nn.Linear, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Per-example gradient of softmax regression, ``(p - e_y) x^T`` and ``p - e_y``."""
    residual = model(x).softmax(1).detach() - F.one_hot(label, 3)
    return torch.cat([(residual[:, :, None] * x[:, None, :]).flatten(1), residual], dim=1)


def test_grad_noise_tic_aic_bic_match_explicit_formulas():
    model, (x, y) = softmax_regression(), data()
    config = MeasureConfig(noise_batch_size=8)
    v = measures.compute(model, (x, y), names=["grad_noise", "tic", "aic", "bic"], config=config)
    g = explicit_gradients(model, x, y)
    assert v["grad_noise"] == pytest.approx(float(g.var(0, unbiased=False).sum()) / 8, rel=1e-4)
    probs = model(x).softmax(1).detach()
    fisher = sum(
        probs[:, k : k + 1] * explicit_gradients(model, x, torch.full_like(y, k)) ** 2
        for k in range(3)
    ).mean(0)
    log_lik = -float(F.cross_entropy(model(x), y, reduction="sum"))
    expected_tic = -2 * log_lik + 2 * float(((g**2).mean(0) / fisher).sum())
    assert v["tic"] == pytest.approx(expected_tic, rel=1e-4)
    # k = omega, the 12 weights (biases excluded, as the reference's parameter count)
    assert v["aic"] == pytest.approx(2 * 12 - 2 * log_lik, rel=1e-6)
    assert v["bic"] == pytest.approx(12 * math.log(30) - 2 * log_lik, rel=1e-6)


def test_tic_equals_aic_when_labels_follow_the_model():
    # with y drawn from the model, I = J in expectation: tr(J^-1 I) is about the number of
    # parameters, AIC's k = omega when there is no bias (omega counts weights only)
    torch.manual_seed(1)
    model = nn.Linear(4, 3, bias=False)
    x = torch.randn(4000, 4)
    y = torch.multinomial(model(x).softmax(1).detach(), 1).squeeze(1)
    v = measures.compute(model, (x, y), names=["tic", "aic"], config=MeasureConfig(subset=4000))
    assert (v["tic"] - v["aic"]) / 2 == pytest.approx(0.0, abs=1.0)


def test_fisher_rao_norm_matches_liang_identity_on_bias_free_relu_net():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(4, 6, bias=False),
        nn.ReLU(),
        nn.Linear(6, 5, bias=False),
        nn.ReLU(),
        nn.Linear(5, 3, bias=False),
    )
    x, y = data()
    v = measures.compute(model, (x, y), names=["fisher_rao_norm"])
    logits = model(x).detach()
    inner = ((logits.softmax(1) - F.one_hot(y, 3)) * logits).sum(1)
    # <w, grad_w l> = (L + 1) <dl/df, f> with L + 1 = 3 layers (Liang et al., Lemma 2.1)
    assert v["fisher_rao_norm"] == pytest.approx(float(((3 * inner) ** 2).mean()), rel=1e-4)


def test_input_gradient_norm_of_softmax_regression():
    model, (x, y) = softmax_regression(), data()
    v = measures.compute(model, (x, y), names=["input_grad_norm"])
    residual = model(x).softmax(1).detach() - F.one_hot(y, 3)
    expected = (residual @ model.weight.detach()).norm(dim=1).mean()
    assert v["input_grad_norm"] == pytest.approx(float(expected), rel=1e-5)


def test_the_measures_load_no_deprecated_torch_jit_script():
    """Forward-mode AD (``torch.func.jvp``) makes torch compile its jvp decompositions with
    the deprecated ``torch.jit.script`` (a FutureWarning): no measure may use it."""
    code = (
        "import sys, torch, torch.nn as nn; from shiftbench import measures\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))\n"
        "x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))\n"
        "names = [n for n, m in measures.registry().items() if not m.probe]\n"
        "values = measures.compute(model, (x, y), init_model=model, names=names)\n"
        "print('fisher_rao_norm' in values, 'torch._decomp.decompositions_for_jvp' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.split() == ["True", "False"], done.stderr[-2000:]
