"""The sweep in the driver (``--workers 0``): plan, resume, failures, retries, timeouts,
exit codes, provenance and ``shiftbench rerun``."""

from __future__ import annotations

import json
import signal

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import CHECKPOINTS, assert_exactly_once, faults, stalled, wait_for

from shiftbench.cli import main
from shiftbench.faults import ENV
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store
from shiftbench.sweep import driver as sweep
from shiftbench.sweep.driver import run_study
from shiftbench.sweep.planning import plan
from shiftbench.sweep.rerun import rerun_trial

HUGE = 10**12  # an MLP this wide cannot be allocated: the trial runs out of memory at once


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_run_records_provenance_and_resumes_to_nothing(make_study, store_dir):
    path = make_study()
    study = load_study(path)
    code, out = cli("run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet")
    assert code == 0, out
    assert "complete" in out
    assert_exactly_once(study, store_dir, {"done"})
    ledger = store.read(store_dir, "tiny")
    configs = {t.trial_id: t.config_json for t in study.trials()}
    assert (ledger["config"] == ledger["trial_id"].map(configs)).all()
    for column in (
        "git_commit",
        "git_dirty",
        "shiftbench_version",
        "torch_version",
        "python_version",
        "device",
        "hostname",
        "start_time",
        "end_time",
    ):
        assert ledger[column].notna().all(), column
    assert set(ledger["device"]) == {"cpu"}
    files = sorted(p.name for p in store.study_dir(store_dir, "tiny").glob("*.parquet"))
    assert len(files) == 1 and files[0].startswith("part-")
    summary = run_study(study, store_dir, workers=0, progress=False)
    assert summary.ran == 0
    assert sorted(p.name for p in store.study_dir(store_dir, "tiny").glob("*.parquet")) == files


def test_a_run_builds_and_dispatches_its_trials_a_window_at_a_time(
    make_study, store_dir, monkeypatch
):
    """Windows of 2 trials: --max-trials 3 runs 3 (across two windows), the next run the
    last one, and each trial lands exactly once."""
    study = load_study(make_study())
    monkeypatch.setattr(sweep, "WINDOW", 2)
    windows = []
    plan_groups = sweep.plan_groups
    monkeypatch.setattr(
        sweep, "plan_groups", lambda t, *a, **k: windows.append(len(t)) or plan_groups(t, *a, **k)
    )
    assert run_study(study, store_dir, workers=0, max_trials=3, progress=False).ran == 3
    assert windows == [2, 1] and plan(study, store_dir).pending_count == 1
    assert run_study(study, store_dir, workers=0, progress=False).ran == 1
    assert windows == [2, 1, 1]
    assert_exactly_once(study, store_dir, {"done"})


def test_failed_diverged_and_out_of_memory_trials_land_and_are_retried(
    make_study, store_dir, monkeypatch
):
    path = make_study(
        objective={"steps": 20, "eval_every": 10, "model": "mlp", "width": [16, HUGE]},
        solvers={"sgd": {"lr": [0.05, 1.0e6]}},
        search={"kind": "grid"},
        retries=1,
    )
    study = load_study(path)
    raising = next(
        t
        for t in study.trials()
        if dict(t.objective_params)["width"] == 16
        and dict(t.solver_params)["lr"] == 0.05
        and t.seed == 1
    )
    monkeypatch.setenv(
        ENV, faults({"at": "trial.start", "trial": raising.trial_id, "do": "raise"})
    )
    args = ("run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet")
    code, out = cli(*args)
    assert code == 1 and "incomplete: 5 pending" in out, out
    ledger = store.read(store_dir, "tiny")
    final = store.final_rows(ledger).groupby("trial_id").last()
    for trial in study.trials():
        width, lr = dict(trial.objective_params)["width"], dict(trial.solver_params)["lr"]
        row = final.loc[trial.trial_id]
        if width == HUGE:
            assert row["status"] == "failed" and "allocate" in row["error"]
        elif trial.trial_id == raising.trial_id:
            assert row["status"] == "failed" and "InjectedFault" in row["error"]
        elif lr > 1:
            assert row["status"] == "diverged" and row["step"] in CHECKPOINTS
        else:
            assert row["status"] == "done"
    code, out = cli(*args)
    assert code == 1 and "0 pending, 5 failed after 2 attempts" in out, out
    assert_exactly_once(study, store_dir, {"done", "diverged", "failed"})
    assert store.trial_states(store.read(store_dir, "tiny"))["attempts"].max() == 2
    code, out = cli("status", str(path), "--store", str(store_dir))
    assert code == 0
    counts = dict(line.split() for line in out.splitlines()[1:6])
    assert counts == {"done": "1", "diverged": "2", "failed": "5", "timeout": "0", "pending": "0"}
    assert "5 failed trials have used all 2 attempts" in out


@pytest.mark.slow
def test_a_trial_over_its_time_limit_is_stopped_and_retried(make_study, store_dir, monkeypatch):
    path = make_study(timeout_s=10, seeds=[0], retries=3)
    study = load_study(path)
    slow = study.trials()[0]
    monkeypatch.setenv(
        ENV, faults({"at": "trial.start", "trial": slow.trial_id, "do": "sleep", "seconds": 600})
    )
    summary = run_study(study, store_dir, workers=0, progress=False)
    assert summary.ran == 2  # the sweep went on (on a loaded machine the other may time out)
    row = store.read(store_dir, "tiny").set_index("trial_id").loc[slow.trial_id]
    assert row["status"] == "timeout" and "timeout_s=10" in row["error"]
    monkeypatch.delenv(ENV)
    while plan(study, store_dir).pending:
        run_study(study, store_dir, workers=0, progress=False)
    assert_exactly_once(study, store_dir, {"done"})
    assert (
        store.trial_states(store.read(store_dir, "tiny"))
        .set_index("trial_id")
        .loc[slow.trial_id, "attempts"]
        >= 2
    )


def test_rerun_reports_whether_the_numbers_match(make_study, store_dir, tmp_path):
    path = make_study(seeds=[0])
    study = load_study(path)
    run_study(study, store_dir, workers=0, progress=False)
    trial_id = study.trials()[1].trial_id
    code, out = cli("rerun", trial_id, "--study", str(path), "--store", str(store_dir))
    assert code == 0 and "numbers match the ledger" in out, out
    tampered = tmp_path / "tampered"
    for part in store.study_dir(store_dir, "tiny").glob("*.parquet"):
        table = pq.read_table(part)
        shifted = pc.add(table["id_acc"], 0.01)
        table = table.set_column(table.column_names.index("id_acc"), "id_acc", shifted)
        store.study_dir(tampered, "tiny").mkdir(parents=True)
        pq.write_table(table, store.study_dir(tampered, "tiny") / part.name)
    code, out = cli("rerun", trial_id, "--study", str(path), "--store", str(tampered))
    assert code == 1 and "MISMATCH" in out and "id_acc" in out, out
    code, out = cli("rerun", "0123456789abcdef", "--study", str(path), "--store", str(store_dir))
    assert code == 1 and "has no rows in the ledger" in out


def test_nothing_is_written_outside_the_store(make_study, tmp_path, monkeypatch):
    path = make_study(seeds=[0])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = {p for p in tmp_path.rglob("*")}
    code, out = cli("run", str(path), "--store", "ledger", "--workers", "0", "--quiet")
    assert code == 0, out
    new = {p for p in tmp_path.rglob("*")} - before
    assert new and all(p.is_relative_to(cwd / "ledger") for p in new), sorted(new)
    assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("bad", ["[1, 2", "{}", '[{"at": "trial.start", "do": "explode"}]'])
def test_bad_fault_settings_fail_loudly(bad, monkeypatch):
    from shiftbench.faults import hit

    monkeypatch.setenv(ENV, bad)
    with pytest.raises(ValueError):
        hit("trial.start")


def test_config_column_is_json_that_rebuilds_the_trial(make_study, store_dir):
    from shiftbench.trials.trial import Trial

    study = load_study(make_study(seeds=[0]))
    run_study(study, store_dir, workers=0, progress=False)
    ledger = store.read(store_dir, "tiny")
    for trial_id, config in zip(ledger["trial_id"], ledger["config"]):
        assert Trial.from_config(json.loads(config)).trial_id == trial_id


def test_a_run_skips_and_keeps_a_damaged_ledger_file(make_study, store_dir):
    path = make_study(seeds=[0])
    folder = store.study_dir(store_dir, "tiny")
    folder.mkdir(parents=True)
    garbage = folder / "batch-damaged.parquet"
    garbage.write_bytes(b"PAR1 this is not a ledger")
    with pytest.warns(store.LedgerWarning, match=str(garbage)):
        code, out = cli("run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet")
    assert code == 0, out
    assert garbage.read_bytes() == b"PAR1 this is not a ledger"
    code, out = cli("status", str(path), "--store", str(store_dir))
    assert f"unreadable ledger file left untouched: {garbage}" in out
    assert "done           2" in out


@pytest.mark.slow
def test_sigterm_lands_the_finished_trials_and_exits_130(make_study, store_dir, tmp_path, driver):
    path = make_study()
    study = load_study(path)
    started = tmp_path / "third-started"
    third = study.trials()[2]
    proc = driver.start(
        "run",
        str(path),
        "--store",
        str(store_dir),
        "--workers",
        "0",
        "--quiet",
        fault_spec=stalled(third.trial_id, started),
    )
    wait_for(started.exists, "the third trial to start")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted: 2 trials left" in out, out
    landed = set(store.read(store_dir, "tiny")["trial_id"])
    assert landed == {t.trial_id for t in study.trials()[:2]}


@pytest.mark.ray
def test_a_rerun_in_the_driver_reproduces_a_ray_worker_trial(ray_cluster, make_study, store_dir):
    """A Ray worker trains with one torch thread (its CPUs); the rerun in the driver must too,
    whatever the driver's own thread count, or reductions round differently."""
    import torch

    path = make_study(
        seeds=[0],
        # a quickstart trial whose rerun in the driver differed by 5e-6 at two threads
        objective={"steps": 300, "eval_every": 50, "model": "cnn", "width": 32},
        solvers={"sgd": {"lr": 0.1113, "batch_size": 105, "weight_decay": 2.971e-06}},
        search={"kind": "grid"},
    )
    study = load_study(path)
    run_study(study, store_dir, workers=1, progress=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for trial in study.trials():
            assert rerun_trial(study, store_dir, trial.trial_id).matches
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
