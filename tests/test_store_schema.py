"""The ledger schema: one row builder, and every column a real trial writes is named by it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from shiftbench.plugins import registry
from shiftbench.store import schema
from shiftbench.trials.provenance import static_provenance
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

# bookkeeping columns: written once by the runner, named here by hand
BOOKKEEPING = {
    "study",
    "trial_id",
    "attempt",
    "status",
    "error",
    "dataset",
    "solver",
    "solver_label",
    "seed",
    "sample",
    "config",
    "start_time",
    "end_time",
    "step",
    "time",
    "epoch",
    "test",
}
METRICS = {"train_loss", "train_acc", "id_acc", "id_loss", "ood_acc", "ood_loss"}
METRICS |= {"oracle_acc", "test_in_acc", "avg_test_acc"}


def tiny_trial(steps: int = 4) -> Trial:
    obj = {k: v for k, v in registry.defaults(registry.objective_class()).items() if k != "seed"}
    obj.update(steps=steps, eval_every=2, model="mlp", depth=1, width=8)
    ds = registry.defaults(registry.dataset_class("colored_digits"))
    solver = {**registry.defaults(registry.solver_class("sgd")), "lr": 0.05, "batch_size": 16}
    return Trial.make("colored_digits", ds, obj, "sgd", solver, 0)


def test_rows_one_per_checkpoint_with_extras_on_the_last():
    trial = Trial.make("d", {"test_env": 2}, {"steps": 4}, "adam", {"lr": 0.001}, 3, sample=1)
    curve = [schema.checkpoint(0, 0.0, {"train_loss": 2.0}), schema.checkpoint(4, 1.5, {})]
    started = datetime(2026, 1, 1, tzinfo=UTC)
    rows = schema.trial_rows(trial, "s", 1, "done", "", curve, {"x": 1}, started, {"device": "c"})
    assert [r["step"] for r in rows] == [0, 4]
    assert rows[0]["train_loss"] == 2.0 and rows[1]["time"] == 1.5
    assert "x" not in rows[0] and rows[1]["x"] == 1
    first = rows[0]
    assert first["ds.test_env"] == 2 and first["obj.steps"] == 4 and first["hp.lr"] == 0.001
    assert first["solver_label"] == "adam[lr=0.001]" == trial.solver_label
    assert (first["trial_id"], first["seed"], first["sample"]) == (trial.trial_id, 3, 1)
    failed = schema.trial_rows(trial, "s", 0, "failed", "boom", [], {}, started, {})
    assert len(failed) == 1 and failed[0]["step"] == -1 and failed[0]["error"] == "boom"


def test_prefix_and_environment_helpers():
    assert schema.prefixed("hp.", {"lr": 1}) == {"hp.lr": 1}
    assert schema.prefixed("hp.", [("lr", 1)]) == {"hp.lr": 1}
    assert schema.unprefixed("hp.", "hp.lr") == "lr"
    assert schema.columns(["hp.lr", "hp.", "ds.x", "hp.wd"], "hp.") == ["hp.lr", "hp.wd"]
    assert schema.columns(["hp.lr", "ds.x", "seed"], schema.CONFIG_PREFIXES) == ["hp.lr", "ds.x"]
    assert schema.env_column(3, "in_acc") == "env3_in_acc"
    assert schema.parse_env_column("env12_out_acc") == (12, "out_acc")
    assert schema.parse_env_column("envelope_acc") is None
    assert schema.parse_env_column("ood_acc") is None
    assert schema.solver_label("sgd", [("lr", 0.123456), ("nesterov", True)]) == (
        "sgd[lr=0.1235,nesterov=True]"
    )


def test_status_filter_and_measure_columns():
    ledger = pd.DataFrame({"status": ["done", "failed", "diverged", "timeout", "measured"]})
    assert schema.with_status(ledger, *schema.FINISHED).index.tolist() == [0, 2]
    assert schema.with_status(ledger, *schema.UNSUCCESSFUL).index.tolist() == [1, 3]
    out = schema.measure_columns(
        {"l2": 2}, {"seed": 0}, {"n_train_examples": 5}, {"b": "why b", "a": "why a"}
    )
    assert out == {
        "measure.l2": 2.0,
        "n_train_examples": 5,
        "measure_config.seed": 0,
        "measure_errors": "a: why a; b: why b",
    }
    row = schema.measured_row("t", "s", 0, 7, out, datetime(2026, 1, 1, tzinfo=UTC), {})
    assert (row["status"], row["step"], row["measure.l2"]) == ("measured", 7, 2.0)


@pytest.mark.parametrize("measures", [(), ("l2",)])
def test_every_column_a_real_trial_writes_is_named_by_the_schema(measures):
    provenance = {**static_provenance(Path(__file__).parents[1]), "test": True}
    outcome = TrialRunner(provenance, device="cpu").run(tiny_trial(), "s", measures=measures)
    assert outcome.status == schema.DONE, outcome.error
    columns = set().union(*outcome.rows)
    unnamed = {
        c
        for c in columns
        if c not in BOOKKEEPING
        and c not in schema.PROVENANCE
        and c not in METRICS
        and c not in schema.MEASURE_COUNTS
        and c != schema.MEASURE_ERRORS
        and not c.startswith((*schema.CONFIG_PREFIXES, schema.ACCEL, *schema.MEASURE_PREFIXES))
        and schema.parse_env_column(c) is None
    }
    assert not unnamed
    envs = {schema.parse_env_column(c) for c in columns} - {None}
    assert {(0, "in_acc"), (0, "out_acc"), (2, "acc")} <= envs
    assert ("measure.l2" in columns) == bool(measures)


def test_provenance_and_worker_columns_are_written_through_the_schema():
    """Provenance (code, libraries, host, device) and the worker's Ray node are the schema's
    named columns, and a name the schema does not know is refused."""
    written = static_provenance(Path(__file__).parents[1])
    assert set(written) == set(schema.PROVENANCE) - {"device"}
    row = TrialRunner(written, device="cpu").row_provenance()
    assert {c for c in row if not c.startswith(schema.ACCEL)} == set(schema.PROVENANCE)
    assert schema.provenance(hostname="h", ray_node="n") == {"hostname": "h", "ray_node": "n"}
    assert schema.WORKER == ("ray_node",)
    with pytest.raises(KeyError, match="worker_host"):
        schema.provenance(worker_host="h")
