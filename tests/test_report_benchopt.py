"""``shiftbench export`` / ``to_benchopt``: Benchopt's result columns, checked row by row
against the ledger read back on its own (latest attempt, finished trials, checkpoints only)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import faults

from shiftbench.cli import main
from shiftbench.faults import ENV
from shiftbench.plugins.files import benchmark_root
from shiftbench.report.benchopt import to_benchopt
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store

# ledger column -> Benchopt column, written out by hand from Benchopt's result format
RENAMED = {
    "train_loss": "objective_train_loss",
    "train_acc": "objective_train_acc",
    "id_acc": "objective_id_acc",
    "id_loss": "objective_id_loss",
    "ood_acc": "objective_ood_acc",
    "ood_loss": "objective_ood_loss",
    "oracle_acc": "objective_oracle_acc",
    "test_in_acc": "objective_test_in_acc",
    "avg_test_acc": "objective_avg_test_acc",
    "solver_label": "solver_name",
    "time": "time",
    "step": "stop_val",
    "seed": "idx_rep",
    "hp.lr": "p_solver_lr",
    "hp.batch_size": "p_solver_batch_size",
    "ds.test_env": "p_dataset_test_env",
    "obj.model": "p_obj_model",
    "obj.width": "p_obj_width",
    "obj.steps": "p_obj_steps",
}


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[Path]:
    """A result file name in the benchmark's outputs/ folder, removed afterwards."""
    name = f"test-export-{tmp_path.name}.parquet"
    yield Path(name)
    (benchmark_root() / "outputs" / name).unlink(missing_ok=True)


def same(x: object, y: object) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def test_export_has_benchopts_columns_and_the_ledgers_numbers(
    make_study, store_dir, tmp_path, monkeypatch, exported
):
    path = make_study(
        solvers={"sgd": {"lr": [0.05, 1000000.0]}}, search={"kind": "grid"}, seeds=[0, 1]
    )
    study = load_study(path)
    retried = next(
        t for t in study.trials() if dict(t.solver_params)["lr"] == 0.05 and t.seed == 1
    )
    monkeypatch.setenv(
        ENV,
        faults(
            {
                "at": "trial.start",
                "trial": retried.trial_id,
                "do": "raise",
                "once": str(tmp_path / "raised"),
            }
        ),
    )
    run = ["run", str(path), "--store", str(store_dir), "--workers", "0", "--quiet"]
    for _ in range(2):  # the second run retries the trial that raised
        CliRunner().invoke(main, run)
    result = CliRunner().invoke(
        main, ["export", str(path), "--store", str(store_dir), "--benchopt", str(exported)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_parquet(benchmark_root() / "outputs" / exported)

    ledger = store.read(store_dir, "tiny")
    assert set(ledger["status"]) == {"done", "diverged", "failed"}
    expected = []
    for _, rows in ledger.groupby("trial_id"):
        latest = rows[rows["attempt"] == rows["attempt"].max()]
        expected += [
            row for _, row in latest.iterrows() if row["step"] >= 0 and row["status"] != "failed"
        ]
    # 2 done trials x 3 checkpoints, plus the diverged trials' checkpoints; no failed attempt
    diverged = ledger[ledger["status"] == "diverged"]
    assert len(frame) == len(expected) == 2 * 3 + len(diverged)
    assert {"config", "error", "hp.lr", "attempt"}.isdisjoint(frame.columns)
    assert {"objective_value", "data_name", "objective_name", "run_date"} <= set(frame.columns)

    by_checkpoint = frame.set_index(["trial_id", "stop_val"], drop=False)
    for row in expected:
        got = by_checkpoint.loc[(row["trial_id"], row["step"])]
        for column, benchopt_column in RENAMED.items():
            assert same(got[benchopt_column], row[column]), (benchopt_column, row["trial_id"])
        assert same(got["objective_value"], row["train_loss"])
        assert got["run_date"] == row["start_time"].strftime("%Y-%m-%dT%H:%M:%S")
        assert got["data_name"].startswith("colored_digits[") and "test_env=2" in got["data_name"]
        assert got["objective_name"].startswith("shiftbench[") and all(
            f"{k}={v}," in got["objective_name"] for k, v in [("model", "mlp"), ("steps", 20)]
        )
    done = frame[frame["trial_id"] == retried.trial_id]
    assert list(done["stop_val"]) == [0, 10, 20]
    assert set(done["solver_name"]) == {"sgd[batch_size=64,lr=0.05,rotation=none,weight_decay=0]"}


def test_no_finished_trial_gives_an_empty_view():
    ledger = pd.DataFrame(
        {"study": ["s"], "trial_id": ["t"], "attempt": [0], "status": ["failed"], "step": [-1]}
    )
    assert to_benchopt(ledger).empty
