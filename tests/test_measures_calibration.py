"""Calibration measures on designed predictive distributions with known answers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shiftbench.measures import core as measures

NAMES = ["ece", "mce", "nll", "brier", "confidence", "entropy"]


def lookup_model(probs: torch.Tensor) -> nn.Module:
    """A linear map sending one-hot input ``e_j`` to logits ``log probs[j]``."""
    model = nn.Linear(len(probs), probs.shape[1], bias=False)
    with torch.no_grad():
        model.weight.copy_(probs.log().T)
    return model


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_designed_calibration_case(split):
    # two input types: confidence 0.9 on class 0 (right 5 of 10 times) and
    # confidence 0.6 on class 1 (right 6 of 10 times); the other split gets the first
    # type only, so every value below comes from the split named
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.6, 0.2]])
    x = torch.eye(2).repeat_interleave(10, dim=0)
    y = torch.tensor([0] * 5 + [1] * 5 + [1] * 6 + [2] * 4)
    designed, other = (x, y), (x[:10], y[:10])
    train, heldout = (designed, other) if split == "train" else (other, designed)
    values, reasons = measures.compute_with_reasons(
        lookup_model(probs),
        train,
        names=[f"{n}_{s}" for n in NAMES for s in ("train", "heldout")],
        heldout_data=heldout,
    )
    v = {name: values[f"{name}_{split}"] for name in NAMES}
    assert v["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.0, abs=1e-6)
    assert v["mce"] == pytest.approx(0.4, abs=1e-6)
    p_true = torch.tensor([0.9] * 5 + [0.05] * 5 + [0.6] * 6 + [0.2] * 4)
    assert v["nll"] == pytest.approx(float(-p_true.log().mean()), rel=1e-5)
    brier_a = [(0.9 - 1) ** 2 + 2 * 0.05**2] * 5 + [0.9**2 + 0.95**2 + 0.05**2] * 5
    brier_b = [0.2**2 + 0.4**2 + 0.2**2] * 6 + [0.2**2 + 0.6**2 + 0.8**2] * 4
    assert v["brier"] == pytest.approx(sum(brier_a + brier_b) / 20, rel=1e-5)
    assert v["confidence"] == pytest.approx(0.75, rel=1e-6)
    ent = [-sum(p * math.log(p) for p in row) for row in probs.tolist()]
    assert v["entropy"] == pytest.approx(sum(ent) / 2, rel=1e-5)
    # the first type alone: confidence 0.9, right half the time
    assert values["ece_heldout" if split == "train" else "ece_train"] == pytest.approx(0.4)
    assert not reasons


def test_perfectly_calibrated_case_has_zero_ece():
    probs = torch.tensor([[0.8, 0.2], [0.25, 0.75]])
    x = torch.eye(2).repeat_interleave(20, dim=0)
    y = torch.tensor([0] * 16 + [1] * 4 + [1] * 15 + [0] * 5)
    v = measures.compute(lookup_model(probs), (x, y), names=["ece_train", "mce_train"])
    assert v["ece_train"] == pytest.approx(0.0, abs=1e-6)
    assert v["mce_train"] == pytest.approx(0.0, abs=1e-6)


def test_only_the_confidence_predicts_a_smaller_gap():
    table = measures.registry()
    runs_the_other_way = {name for name, entry in table.items() if entry.direction == -1}
    assert runs_the_other_way == {"confidence_train", "confidence_heldout"}
    with pytest.raises(ValueError, match="direction must be 1 or -1"):
        measures.measure("x", family="norms", direction=0)
