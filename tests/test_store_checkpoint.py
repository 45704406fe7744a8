"""Resume inside a trial (``checkpoint_every``): the saved training state round-trips, and a
trial resumed from it ends with an uninterrupted run's numbers, for each kind of state (plain
and rotated optimizers with SVD bases, IRM's reset optimizer, dropout's RNG, a learning-rate
schedule, a vectorized ensemble); checkpoints are removed once the trial's rows land."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_same_numbers, faults, wait_for

from shiftbench.faults import ENV
from shiftbench.spec.study import StudyError, load_study
from shiftbench.store import artifacts, checkpoint
from shiftbench.store import ledger as store
from shiftbench.sweep.driver import run_study
from shiftbench.sweep.rerun import result_differences
from shiftbench.trials.ensemble import run_ensemble
from shiftbench.trials.grouping import ensemble_groups
from shiftbench.trials.runner import TrialRunner

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EVERY = 7  # steps 7 and 14 of 20 are saved; the last save (14) is where a rerun resumes


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def test_encode_decode_round_trips_every_kind_of_state():
    random.seed(3)
    np.random.seed(4)
    state = {
        "rng": checkpoint.rng_state(),
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "betas": (0.9, 0.999)},
        "none": None,
        "curve": [{"step": 7, "loss": float("nan")}, {"step": 14, "loss": 1 / 3}],
        "$odd": [True, "text", np.float32(0.5)],
    }
    tensors, text = checkpoint.encode(state)
    back = checkpoint.decode(tensors, text)
    assert torch.equal(back["optimizer"]["state"][0]["step"], torch.tensor(3.0))
    assert back["optimizer"]["betas"] == (0.9, 0.999)
    assert back["curve"][1]["loss"] == 1 / 3 and np.isnan(back["curve"][0]["loss"])
    assert back["$odd"] == [True, "text", 0.5] and back["none"] is None
    assert back["rng"]["python"] == state["rng"]["python"]
    numpy_back, numpy_state = back["rng"]["numpy"], state["rng"]["numpy"]
    assert numpy_back[1].dtype == np.uint32 and (numpy_back[1] == numpy_state[1]).all()
    assert numpy_back[2:] == numpy_state[2:]
    checkpoint.set_rng_state(back["rng"])
    assert random.random() == (random.seed(3), random.random())[1]
    with pytest.raises(TypeError, match="cannot store a object"):
        checkpoint.encode({"x": object()})


def trial_rows(runner: TrialRunner, trial, study: str = "tiny"):
    outcome = runner.run(trial, study)
    assert outcome.status == "done", outcome.error
    return outcome.rows


@pytest.mark.parametrize(
    "solver, objective",
    [
        ({"adam": {"lr": 0.01}}, {"dropout": 0.2}),
        ({"adam": {"lr": 0.01, "rotation": "svd", "svd_every": 3}}, {}),
        ({"momentum": {"rotation": "layer", "rotation_block_size": 4}}, {}),
        ({"sgd": {"lr": 0.05}}, {"algorithm": "irm", "irm_anneal_iters": 9}),
        ({"adamw": {"lr": 0.01, "lr_schedule": "cosine", "warmup_steps": 3}}, {}),
    ],
    ids=["dropout", "rotated-svd", "rotated-layer", "irm-reset", "cosine"],
)
def test_a_trial_resumed_from_its_checkpoint_ends_as_an_uninterrupted_run(
    make_study, store_dir, solver, objective
):
    study = load_study(
        make_study(
            solvers=solver,
            search={"kind": "grid"},
            seeds=[0],
            objective={"steps": 20, "eval_every": 10, "model": "mlp", "width": 16, **objective},
        )
    )
    (trial,) = study.trials()
    plain = trial_rows(TrialRunner({}, device="cpu"), trial)
    runner = TrialRunner({}, device="cpu", sink=artifacts.Sink(str(store_dir), "none", EVERY))
    first = trial_rows(runner, trial)
    url = checkpoint.checkpoint_url(store_dir, "tiny", [trial.trial_id])
    step, state = checkpoint.Checkpoints.of(store_dir, "tiny", [trial.trial_id], EVERY).load()
    assert step == 14 and [p["step"] for p in state["curve"]] == [0, 10]
    assert artifacts.check(url) is None
    resumed = trial_rows(runner, trial)  # the checkpoint is still there: it resumes from it
    assert first[-1]["resumed_from_step"] == 0 and resumed[-1]["resumed_from_step"] == 14
    assert "resumed_from_step" not in plain[-1]
    assert [r["step"] for r in resumed] == [0, 10, 20]
    assert result_differences(frame(plain), frame(first)) == {}
    assert result_differences(frame(plain), frame(resumed)) == {}
    assert resumed[-1]["train_loss"] == plain[-1]["train_loss"]


def test_a_vectorized_ensemble_resumes_with_its_stacked_state(make_study, store_dir):
    study = load_study(
        make_study(
            # fixed data: members share one data set (by default it is redrawn per trial)
            datasets={"colored_digits": {"test_env": [2], "fixed_data": True}},
            solvers={"momentum": {"lr": [0.05, 0.1]}},
            search={"kind": "grid"},
        )
    )
    (group,) = ensemble_groups(study.trials(), 4)
    assert len(group) == 4
    runner = TrialRunner({}, device="cpu", sink=artifacts.Sink(str(store_dir), "none", EVERY))
    ids = [t.trial_id for t in group]
    first = run_ensemble(runner, group, "tiny", [0] * 4)
    step, state = checkpoint.Checkpoints.of(store_dir, "tiny", ids, EVERY).load()
    assert step == 14 and set(state["trainer"]["state"]) == set(state["trainer"]["params"])
    assert all(s["momentum_buffer"].shape[0] == 4 for s in state["trainer"]["state"].values())
    resumed = run_ensemble(runner, group, "tiny", [0] * 4)
    for a, b, trial in zip(first, resumed, group):
        assert a.rows[-1]["resumed_from_step"] == 0 and b.rows[-1]["resumed_from_step"] == 14
        alone = trial_rows(TrialRunner({}, device="cpu"), trial)
        assert result_differences(frame(a.rows), frame(b.rows)) == {}
        assert result_differences(frame(alone), frame(b.rows), rtol=1e-5) == {}


def test_checkpoint_every_is_checked_and_another_trials_checkpoint_is_refused(
    make_study, store_dir
):
    with pytest.raises(StudyError, match=r"checkpoint_every: must be an integer >= 0, got -1$"):
        load_study(make_study(checkpoint_every=-1))
    trials = load_study(make_study()).trials()
    mine = checkpoint.Checkpoints.of(store_dir, "tiny", [trials[0].trial_id], EVERY)
    theirs = checkpoint.Checkpoints(mine.url, EVERY, (trials[1].trial_id,))
    mine.save({"x": torch.ones(2)}, 7)
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {mine.url} is of trials"):
        theirs.load()
    with open(mine.url, "r+b") as handle:
        handle.truncate(20)
    with pytest.raises(
        checkpoint.CheckpointError, match=r"corrupt model artifact .*\(left in place\)"
    ):
        mine.load()


@pytest.mark.parametrize("keep", ["none", "checkpoints"])
def test_checkpoints_are_removed_once_rows_land_unless_kept(make_study, store_dir, keep):
    study = load_study(make_study(checkpoint_every=EVERY, keep=keep))
    run_study(study, store_dir, workers=0, progress=False)
    final = store.final_rows(store.read(store_dir, "tiny"))
    last = final[final["step"] == 20]
    assert sorted(last["resumed_from_step"]) == [0] * 4
    left = {
        t.trial_id: checkpoint.Checkpoints.of(store_dir, "tiny", [t.trial_id], EVERY).load()
        for t in study.trials()
    }
    if keep == "none":
        assert left == dict.fromkeys(left)
        assert artifacts.sizes(store_dir, "tiny") == {}  # no empty trial folder either
    else:
        assert {step for step, _ in left.values()} == {14}


@pytest.mark.slow
def test_a_sigkilled_trial_resumes_from_its_checkpoint_to_the_uninterrupted_numbers(
    make_study, store_dir, tmp_path, driver
):
    path = make_study(
        objective={"steps": 200, "eval_every": 50, "model": "mlp", "width": 64},
        solvers={"adam": {"lr": 0.001}},
        search={"kind": "grid"},
        seeds=[0],
        checkpoint_every=25,
    )
    study = load_study(path)
    (trial,) = study.trials()
    saved = checkpoint.Checkpoints.of(store_dir, "tiny", [trial.trial_id], 25)
    run = ["run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet"]
    proc = driver.start(*run)
    wait_for(lambda: os.path.exists(saved.url), "the trial's first checkpoint")
    os.kill(proc.pid, signal.SIGKILL)  # mid-trial: the checkpoint landed, no row did
    assert proc.wait() == -signal.SIGKILL
    driver.reap()
    step, state = saved.load()
    assert [point["step"] for point in state["curve"]] == list(range(0, step + 1, 50))
    assert 0 < step < 200 and not list(store.study_dir(store_dir, "tiny").glob("*.parquet"))
    code, out = driver.run(*run)
    assert code == 0 and "1 done" in out, out
    last = store.final_rows(store.read(store_dir, "tiny")).sort_values("step").iloc[-1]
    assert last["step"] == 200 and last["resumed_from_step"] == step
    assert saved.load() is None  # removed once the trial's rows landed
    reference = tmp_path / "reference"
    run_study(study, reference, workers=0, progress=False)
    assert_same_numbers(store_dir, reference, "tiny")


@pytest.mark.slow
@pytest.mark.ray
def test_a_ray_worker_killed_mid_trial_resumes_on_a_fresh_worker(
    ray_cluster, make_study, store_dir, tmp_path, monkeypatch
):
    path = make_study(
        solvers={"adam": {"lr": 0.01}}, search={"kind": "grid"}, seeds=[0], checkpoint_every=EVERY
    )
    study = load_study(path)
    (trial,) = study.trials()
    once = tmp_path / "killed-once"  # the fresh worker is not killed again
    kill = {"at": "checkpoint.saved", "nth": 2, "do": "kill", "once": str(once)}
    monkeypatch.setenv(ENV, faults(kill))
    summary = run_study(study, store_dir, workers=1, progress=False)
    assert once.exists() and summary.counts == {"done": 1}
    last = store.final_rows(store.read(store_dir, "tiny")).sort_values("step").iloc[-1]
    assert last["attempt"] == 0 and last["resumed_from_step"] == 14
    assert checkpoint.Checkpoints.of(store_dir, "tiny", [trial.trial_id], EVERY).load() is None
    monkeypatch.delenv(ENV)
    reference = tmp_path / "reference"
    run_study(study, reference, workers=0, progress=False)
    assert_same_numbers(store_dir, reference, "tiny")
