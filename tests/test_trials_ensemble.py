"""Vectorized ensembles reproduce sequential runs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from shiftbench.plugins import registry
from shiftbench.trials.ensemble import VectorizedTrainer, ensemble_trainer, run_ensemble
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

STEPS = 30
OBJECTIVE = {"steps": STEPS, "eval_every": 10, "model": "mlp", "depth": 2, "width": 16}
# Three members per optimizer with different seeds and continuous hyperparameters.
MEMBERS: dict[str, list[dict[str, Any]]] = {
    "sgd": [{"lr": 0.1}, {"lr": 0.05, "weight_decay": 1e-3}, {"lr": 0.2, "weight_decay": 0.0}],
    "momentum": [{"momentum": 0.9}, {"momentum": 0.5, "weight_decay": 1e-3}, {"momentum": 0.0}],
    "nesterov": [{"momentum": 0.9}, {"momentum": 0.99, "lr": 0.01}, {"weight_decay": 1e-2}],
    "rmsprop": [{}, {"alpha": 0.9, "eps": 1e-6}, {"lr": 3e-3, "weight_decay": 1e-3}],
    "adam": [{}, {"beta1": 0.5, "beta2": 0.99, "lr": 3e-3}, {"weight_decay": 1e-2, "eps": 1e-6}],
    "adamw": [{}, {"beta1": 0.8, "weight_decay": 0.1}, {"lr": 1e-2, "weight_decay": 1e-3}],
}


def make_trial(solver: str, hparams: dict[str, Any], seed: int, **objective: Any) -> Trial:
    obj = {k: v for k, v in registry.defaults(registry.objective_class()).items() if k != "seed"}
    solver_params = {**registry.defaults(registry.solver_class(solver)), "batch_size": 32}
    return Trial.make(
        "colored_digits",
        {"test_env": 2, "holdout_fraction": 0.2, "split_seed": 0},
        {**obj, **OBJECTIVE, **objective},
        solver,
        {**solver_params, **hparams},
        seed,
    )


@pytest.fixture(scope="module")
def runner(one_torch_thread) -> TrialRunner:
    return TrialRunner({}, device="cpu")


METRICS = ("train_loss", "train_acc", "id_acc", "id_loss", "ood_acc", "ood_loss", "oracle_acc")


def assert_same_curve(curve: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """An ensemble member's curve has the sequential run's checkpoints and metrics."""
    assert [p["step"] for p in curve] == [r["step"] for r in rows]
    for point, row in zip(curve, rows):
        for key in METRICS:
            assert point[key] == pytest.approx(row[key], rel=1e-4, abs=1e-5), (key, row["step"])


@pytest.mark.parametrize("solver", sorted(MEMBERS))
def test_members_match_sequential_runs(runner: TrialRunner, solver: str) -> None:
    trials = [make_trial(solver, hp, seed) for seed, hp in enumerate(MEMBERS[solver])]
    curves = ensemble_trainer(runner, trials).run()
    sequential = [runner.run(t, "t") for t in trials]
    assert [o.status for o in sequential] == ["done"] * 3
    for curve, outcome in zip(curves, sequential, strict=True):
        assert_same_curve(curve, outcome.rows)
    assert [p["step"] for p in curves[0]] == [0, 10, 20, 30]


def test_cnn_members_match_sequential_runs(runner: TrialRunner) -> None:
    trials = [
        make_trial("adam", {"lr": lr}, seed, model="cnn", width=8)
        for seed, lr in ((0, 1e-3), (3, 1e-2))
    ]
    curves = ensemble_trainer(runner, trials).run()
    for curve, trial in zip(curves, trials, strict=True):
        assert_same_curve(curve, runner.run(trial, "t").rows)


def test_run_ensemble_rows_and_divergence(runner: TrialRunner) -> None:
    trials = [make_trial("sgd", {"lr": lr}, 0) for lr in (0.1, 1e6)]
    ensemble = run_ensemble(runner, trials, "t", [0, 2])
    sequential = [runner.run(t, "t", 2 * i) for i, t in enumerate(trials)]
    assert [o.status for o in ensemble] == [o.status for o in sequential] == ["done", "diverged"]
    # Vectorized, not fallen back: members share the ensemble's (amortized) training time.
    assert ensemble[0].rows[1]["time"] == ensemble[1].rows[1]["time"] > 0
    assert not math.isfinite(ensemble[1].rows[-1]["train_loss"])
    assert_same_curve(ensemble[0].rows, sequential[0].rows)
    for got, want in zip(ensemble, sequential):
        assert [r["attempt"] for r in got.rows] == [r["attempt"] for r in want.rows]
        assert [r["epoch"] for r in got.rows] == [r["epoch"] for r in want.rows]
        assert set(got.rows[0]) == set(want.rows[0])


def test_member_model_is_the_trained_member(runner: TrialRunner) -> None:
    trials = [make_trial("momentum", {}, seed) for seed in (0, 1)]
    trainer = ensemble_trainer(runner, trials)
    objective = trainer.objective
    objective.seed = 1
    for a, b in zip(
        trainer.member_model(1, initial=True).parameters(),
        objective.build_model().parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)
    curves = trainer.run()
    final = objective.evaluate_result(trainer.member_model(1))
    assert final["train_loss"] == curves[1][-1]["train_loss"]


def test_failed_vectorization_falls_back_to_each_trial(runner: TrialRunner) -> None:
    trials = [
        make_trial("sgd", {"lr": 0.1}, 0, steps=2, eval_every=2),
        make_trial("sgd", {"lr": -1.0}, 1, steps=2, eval_every=2),
    ]
    with pytest.warns(RuntimeWarning, match="one by one"):
        outcomes = run_ensemble(runner, trials, "t", [0, 1])
    assert [o.status for o in outcomes] == ["done", "failed"]
    assert "lr must be > 0" in outcomes[1].error


@pytest.mark.parametrize(
    "hparams, key",
    [
        ({"rotation": "output"}, "rotation"),
        ({"lr_schedule": "cosine"}, "lr_schedule"),
        ({"max_grad_norm": 1.0}, "max_grad_norm"),
    ],
)
def test_a_solver_off_its_vectorized_values_is_refused(runner: TrialRunner, hparams, key) -> None:
    """The trainer refuses any solver whose class declares it trains only at other values
    (``vectorized_at``), whatever the hyperparameter."""
    trials = [make_trial("adam", {}, 0, steps=2), make_trial("adam", hparams, 1, steps=2)]
    solvers = [runner.solver(t) for t in trials]
    with pytest.raises(ValueError, match=f"^{key}=.* is not vectorized"):
        VectorizedTrainer(runner.objective(trials[0]), solvers, [0, 1])
