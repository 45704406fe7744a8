"""Planning a run: the study diffed against its ledger, brought up to date by the run, and
made once per ``shiftbench run``."""

from __future__ import annotations

from click.testing import CliRunner
from conftest import faults

from shiftbench.cli import main
from shiftbench.faults import ENV
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store
from shiftbench.sweep import planning
from shiftbench.sweep.driver import run_study
from shiftbench.sweep.planning import plan


def ledger_row(trial_id: str, attempt: int, status: str, step: int = -1) -> dict:
    return {
        "study": "tiny",
        "trial_id": trial_id,
        "attempt": attempt,
        "status": status,
        "step": step,
    }


def test_plan_splits_trials_by_their_ledger_state(make_study, store_dir):
    study = load_study(make_study(retries=1))
    a, b, c, d = (t.trial_id for t in study.trials())
    store.append(
        store_dir,
        "tiny",
        [
            ledger_row(a, 0, "done", 0),
            ledger_row(a, 0, "done", 10),
            ledger_row(b, 0, "failed"),
            ledger_row(c, 0, "timeout"),
            ledger_row(c, 1, "failed"),
        ],
    )
    todo = plan(study, store_dir)
    assert [t.trial_id for t in todo.pending] == [b, d]
    assert todo.exhausted == [c]
    assert (todo.total, todo.pending_count) == (4, 2)
    assert todo.attempts == {a: 1, b: 1, c: 2, d: 0}
    assert todo.states == {a: "done", b: "failed", c: "failed"}


def test_the_plan_a_run_keeps_up_to_date_is_the_plan_of_its_ledger(
    make_study, store_dir, monkeypatch
):
    """Done, failed-with-attempts-left and failed-for-good trials: the run's own plan,
    updated with what it finished, equals a fresh plan read from the ledger it wrote."""
    study = load_study(make_study(retries=1))
    first, second, *_ = study.trials()
    spec = {"at": "trial.start", "do": "raise"}
    monkeypatch.setenv(
        ENV, faults({**spec, "trial": first.trial_id}, {**spec, "trial": second.trial_id})
    )
    store.append(store_dir, "tiny", [ledger_row(first.trial_id, 0, "failed")])
    summary = run_study(study, store_dir, workers=0, progress=False)
    after, fresh = summary.plan, plan(study, store_dir, 0)
    assert (after.pending_count, after.exhausted) == (fresh.pending_count, fresh.exhausted)
    assert (after.pending_count, after.exhausted) == (1, [first.trial_id])
    assert after.states == fresh.states and after.attempts == fresh.attempts


def test_shiftbench_run_plans_once(make_study, store_dir, monkeypatch):
    """The CLI announces and checks the plan that the run itself makes, under its lock."""
    calls = []
    real = planning.plan

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(planning, "plan", counted)
    monkeypatch.setattr("shiftbench.sweep.driver.plan", counted)
    path = make_study(seeds=[0])
    args = ["run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "tiny: 2 trials, 0 already in the ledger, 2 to run" in result.output
    assert "complete" in result.output and len(calls) == 1
