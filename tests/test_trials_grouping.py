"""Grouping: only what can be vectorized groups, as the plugins declare it."""

from __future__ import annotations

import pytest
from test_trials_ensemble import make_trial

from shiftbench.models import registry as models
from shiftbench.trials.grouping import can_ensemble, ensemble_groups, plan_groups


def test_groups() -> None:
    base = [make_trial("adam", {"lr": lr}, seed) for lr in (1e-3, 1e-2) for seed in (0, 1)]
    other_batch = make_trial("adam", {"batch_size": 16}, 0)
    other_solver = make_trial("adamw", {}, 0)
    blocked = [
        make_trial("adam", {}, 0, dropout=0.5),
        make_trial("adam", {}, 0, model="nin"),
        make_trial("adam", {}, 0, algorithm="irm"),
        make_trial("adam", {"rotation": "global"}, 0),
        make_trial("adam", {"lr_schedule": "cosine"}, 0),
        make_trial("adam", {"warmup_steps": 5}, 0),
        make_trial("adam", {"max_grad_norm": 1.0}, 0),
    ]
    trials = [*base[:2], other_batch, *blocked, *base[2:], other_solver]
    groups = ensemble_groups(trials, max_k=3)
    assert groups == [base[:3], [other_batch], *[[t] for t in blocked], [base[3]], [other_solver]]
    assert can_ensemble(base) and not can_ensemble([*base, other_batch])
    assert not any(can_ensemble([t]) for t in blocked)
    with pytest.raises(ValueError, match="max_k"):
        ensemble_groups(trials, max_k=0)


def test_a_model_vectorizes_when_its_family_declares_it(monkeypatch) -> None:
    """The engine names no model: a family registered ``vectorizable`` groups, and the same
    trials do not once the flag is withdrawn; ``ensemble: auto`` on CPU groups only the
    families registered ``vectorize_on_cpu``."""

    nin = [make_trial("sgd", {"lr": lr}, 0, model="nin") for lr in (0.1, 0.2)]
    cnn = [make_trial("sgd", {"lr": lr}, 0, model="cnn") for lr in (0.1, 0.2)]
    mlp = [make_trial("sgd", {"lr": lr}, 0) for lr in (0.1, 0.2)]
    assert not can_ensemble(nin) and can_ensemble(cnn)
    monkeypatch.setattr(models, "VECTORIZABLE", models.VECTORIZABLE | {"nin"})
    assert can_ensemble(nin)
    monkeypatch.setattr(models, "VECTORIZABLE", models.VECTORIZABLE - {"cnn"})
    assert not can_ensemble(cnn)
    monkeypatch.undo()
    on_cpu = plan_groups([*cnn, *mlp], "auto", uses_gpu=False, measures=False)
    assert on_cpu == [mlp, [cnn[0]], [cnn[1]]]
    assert plan_groups([*cnn, *mlp], "auto", uses_gpu=True, measures=False) == [cnn, mlp]
