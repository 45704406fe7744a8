"""Trained models as results: stored weights, measures computed later on them without
training, sizes, corrupt and half-written files, and ``shiftbench repair``."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import SHIFTBENCH, faults

from shiftbench.cli import main
from shiftbench.spec.study import StudyError, load_study
from shiftbench.store import artifacts
from shiftbench.store import ledger as store
from shiftbench.sweep.driver import run_study
from shiftbench.sweep.planning import plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MEASURES = ["l2", "path_norm", "fro_dist"]


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def final_measures(store_dir, names) -> pd.DataFrame:
    rows = store.final_rows(store.read(store_dir, "tiny"))
    rows = rows[rows["step"] == rows.groupby("trial_id")["step"].transform("max")]
    return rows.set_index("trial_id")[[f"measure.{n}" for n in names]].sort_index()


def test_keep_defaults_to_final_with_measures_and_is_checked(make_study):
    assert load_study(make_study()).keep == "none"
    assert load_study(make_study(measures=["l2"])).keep == "final"
    with pytest.raises(StudyError, match="keep: must be one of none, final, checkpoints"):
        load_study(make_study(keep="all"))


def test_final_weights_are_stored_found_and_loaded_as_the_trained_model(make_study, store_dir):
    study = load_study(make_study(measures=["l2"]))
    run_study(study, store_dir, workers=0, progress=False)
    ledger = store.final_rows(store.read(store_dir, "tiny"))
    sizes = artifacts.sizes(store_dir, "tiny")
    trial_ids = [t.trial_id for t in study.trials()]
    assert sorted(sizes) == sorted(trial_ids)
    for trial_id in trial_ids:
        paths = artifacts.trial_paths(store_dir, "tiny", trial_id)
        assert list(paths) == [0]
        assert [os.path.basename(p) for p in paths[0]] == ["final.safetensors"]
        assert sizes[trial_id] == os.path.getsize(paths[0][0])
        model = artifacts.load_model(store_dir, "tiny", trial_id)
        weights = [p.detach().double() for p in model.parameters() if p.dim() > 1]
        l2 = float(torch.sqrt(sum((w**2).sum() for w in weights)))  # the layers' weights
        recorded = ledger[(ledger["trial_id"] == trial_id) & ledger["measure.l2"].notna()]
        assert l2 == pytest.approx(float(recorded["measure.l2"].iloc[0]), rel=1e-5)
    code, out = cli("status", str(make_study(measures=["l2"])), "--store", str(store_dir))
    assert code == 0
    assert f"models: 4 trials, {artifacts._human(sum(sizes.values()))}" in out


def test_keep_checkpoints_stores_every_checkpoint_and_none_stores_nothing(
    make_study, store_dir, tmp_path
):
    run_study(load_study(make_study(keep="checkpoints")), store_dir, workers=0, progress=False)
    trial_id = load_study(make_study()).trials()[0].trial_id
    names = sorted(
        os.path.basename(p) for p in artifacts.trial_paths(store_dir, "tiny", trial_id)[0]
    )
    assert names == [
        "final.safetensors",
        "step-0.safetensors",
        "step-10.safetensors",
        "step-20.safetensors",
    ]
    other = tmp_path / "other"
    run_study(load_study(make_study()), other, workers=0, progress=False)
    assert artifacts.sizes(other, "tiny") == {}
    assert not (store.study_dir(other, "tiny") / artifacts.FOLDER).exists()


def test_added_measures_are_computed_on_stored_models_without_training(
    make_study, store_dir, tmp_path
):
    """The done-when test: ``[l2]``, then ``[l2, path_norm, fro_dist]`` trains nothing, adds
    each measure once, equal to what training computes them as."""
    run_study(load_study(make_study(measures=["l2"])), store_dir, workers=0, progress=False)
    before = store.read(store_dir, "tiny")
    study = load_study(make_study(measures=MEASURES))
    todo = plan(study, store_dir)
    assert todo.pending == [] and len(todo.measure) == 4
    assert {job.names for job in todo.measure} == {("path_norm", "fro_dist")}
    _, out = cli("status", str(study.path), "--store", str(store_dir))
    assert (
        "measures missing, to compute on stored models by `run`: fro_dist (4 trials), "
        "path_norm (4 trials)" in out
    )
    # the second answer comes from the expansion cache, which keeps the measures' settings
    assert cli("status", str(study.path), "--store", str(store_dir))[1] == out
    summary = run_study(study, store_dir, workers=0, progress=False)
    assert summary.counts == {"measured": 4}
    after = store.read(store_dir, "tiny")
    key = ["trial_id", "attempt", "step"]
    assert len(after) == len(before) and not after.duplicated(key).any()
    pd.testing.assert_frame_equal(
        after.sort_values(key)[before.columns].reset_index(drop=True),
        before.sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )  # every value that had landed is unchanged
    assert plan(study, store_dir).measure == []  # the measures landed exactly once
    assert run_study(study, store_dir, workers=0, progress=False).ran == 0
    trained = tmp_path / "trained"
    run_study(study, trained, workers=0, progress=False)
    np.testing.assert_allclose(
        final_measures(store_dir, MEASURES).to_numpy(),
        final_measures(trained, MEASURES).to_numpy(),
        rtol=1e-5,
    )


def test_new_measure_settings_recompute_every_measure_with_them(make_study, store_dir):
    run_study(load_study(make_study(measures=["l2"])), store_dir, workers=0, progress=False)
    study = load_study(make_study(measures=["l2", "path_norm"], measure_config={"seed": 3}))
    assert {job.names for job in plan(study, store_dir).measure} == {("l2", "path_norm")}
    run_study(study, store_dir, workers=0, progress=False)
    rows = store.final_rows(store.read(store_dir, "tiny"))
    final = rows[rows["measure.l2"].notna()]
    assert len(final) == 4 and set(final["measure_config.seed"]) == {3}
    assert final["measure.path_norm"].notna().all()


def test_trials_without_stored_models_are_named_and_retrained_only_when_asked(
    make_study, store_dir
):
    run_study(load_study(make_study(keep="none")), store_dir, workers=0, progress=False)
    path = str(make_study(measures=["l2"]))
    code, out = cli("run", path, "--store", str(store_dir), "--workers", "0", "--quiet")
    assert code == 0
    assert "4 done trials lack measures and have no stored model (keep: none): --retrain" in out
    assert "ran 0 trials" in out
    code, out = cli(
        "run", path, "--store", str(store_dir), "--workers", "0", "--quiet", "--retrain"
    )
    assert code == 0 and "ran 4 trials" in out and "4 done" in out
    rows = store.final_rows(store.read(store_dir, "tiny"))
    assert set(rows["attempt"]) == {1} and rows["measure.l2"].notna().sum() == 4


def test_a_corrupt_model_is_reported_by_path_and_never_deleted(make_study, store_dir):
    run_study(load_study(make_study(measures=["l2"])), store_dir, workers=0, progress=False)
    trial_id = load_study(make_study()).trials()[0].trial_id
    path = artifacts.final_path(store_dir, "tiny", trial_id, 0)
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])
    assert "bytes, the header describes" in artifacts.check(path)
    with pytest.raises(artifacts.ArtifactError, match=f"corrupt model artifact {path}"):
        artifacts.load_model(store_dir, "tiny", trial_id)
    study_file = str(make_study(measures=["l2", "path_norm"]))
    code, out = cli("run", study_file, "--store", str(store_dir), "--workers", "0", "--quiet")
    assert code == 0 and "3 measured" in out
    _, out = cli("status", study_file, "--store", str(store_dir))
    assert f"corrupt model file left untouched: {path}" in out
    assert "path_norm (1 trials)" in out
    assert os.path.getsize(path) == len(data) // 2


def test_a_killed_writer_leaves_only_a_temporary_that_repair_removes(make_study, store_dir):
    study_file = str(make_study(measures=["l2"]))
    env = {
        **os.environ,
        "SHIFTBENCH_FAULTS": faults({"at": "artifacts.tmp_written", "do": "kill"}),
    }
    command = [str(SHIFTBENCH), "run", study_file, "--store", str(store_dir), "--workers", "0"]
    killed = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9
    root = store.study_dir(store_dir, "tiny") / artifacts.FOLDER
    leftovers = [p for p in root.rglob("*") if p.is_file()]
    assert len(leftovers) == 1 and artifacts.TMP_MARK in leftovers[0].name
    assert artifacts.sizes(store_dir, "tiny") == {}
    assert all(
        artifacts.trial_paths(store_dir, "tiny", t.trial_id) == {}
        for t in load_study(study_file).trials()
    )
    code, out = cli("repair", study_file, "--store", str(store_dir))
    assert code == 0 and f"removed {leftovers[0]}" in out
    assert not leftovers[0].exists()


def test_models_load_through_an_fsspec_url(make_study):
    study = load_study(make_study())
    trial = study.trials()[0]
    model = torch.nn.Linear(3, 2)
    url = artifacts.Sink("memory://shiftbench-test").save(
        "tiny", trial, 0, "final", model.state_dict(), 20
    )
    state, metadata = artifacts.load_state(url)
    assert metadata["trial_id"] == trial.trial_id and metadata["step"] == "20"
    torch.testing.assert_close(state["weight"], model.weight.detach())
    found = artifacts.trial_paths("memory://shiftbench-test", "tiny", trial.trial_id)
    assert list(found) == [0] and found[0][0].endswith(f"/{trial.trial_id}/0/final.safetensors")
    assert artifacts.load_state(found[0][0])[1] == metadata


@pytest.mark.ray
def test_on_ray_workers_store_models_and_measure_them_later(ray_cluster, make_study, store_dir):
    run_study(load_study(make_study(measures=["l2"])), store_dir, workers=2, progress=False)
    assert len(artifacts.sizes(store_dir, "tiny")) == 4  # written by the workers
    study = load_study(make_study(measures=["l2", "path_norm"]))
    summary = run_study(study, store_dir, workers=2, progress=False)
    assert summary.counts == {"measured": 4}
    assert final_measures(store_dir, ["l2", "path_norm"]).notna().all().all()
    assert plan(study, store_dir).measure == []
