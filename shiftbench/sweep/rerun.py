"""Reruns: one trial run again in the driver and compared with its ledger rows, column by
column (``shiftbench rerun``, and the fault-injection tests' "same numbers" check)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shiftbench.plugins.files import benchmark_root
from shiftbench.spec.study import Study
from shiftbench.store import ledger as store
from shiftbench.trials.provenance import static_provenance
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

# Columns that legitimately differ between two runs of one trial: wall-clock and bookkeeping.
NOT_RESULTS = frozenset({"attempt", "time", "worker_pid", "sample", "resumed_from_step"})


@dataclass
class Rerun:
    """A trial run again in this process, against its latest attempt in the ledger."""

    trial: Trial
    ledger_status: str
    status: str
    differences: dict[str, str]

    @property
    def matches(self) -> bool:
        return self.status == self.ledger_status and not self.differences


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Torch's intra-op thread count as a Ray worker of the study has it (Ray gives an actor
    ``OMP_NUM_THREADS`` = its CPUs): reductions split over another number of threads round
    differently, so a rerun in the driver would not reproduce the worker's numbers."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def rerun_trial(study: Study, store_dir: Path, trial_id: str) -> Rerun:
    """Run one trial of the study (or of the ledger) again and compare its numbers with the
    ledger's; raises ``KeyError`` for a trial the ledger does not hold."""
    ledger = store.final_rows(store.read(store_dir, study.name))
    recorded = ledger[ledger["trial_id"] == trial_id]
    if recorded.empty:
        raise KeyError(
            f"trial {trial_id} has no rows in the ledger of study {study.name} in {store_dir}"
        )
    trial = next((t for t in study.iter_trials() if t.trial_id == trial_id), None)
    if trial is None:  # a trial of an earlier version of the study file
        trial = Trial.from_config(json.loads(recorded["config"].iloc[0]))
    attempt = int(recorded["attempt"].iloc[0])
    runner = TrialRunner(static_provenance(benchmark_root()), accel=study.accel)
    with _torch_threads(max(1, int(study.resources.cpus))):
        outcome = runner.run(trial, study.name, attempt, study.measures, study.measure_config)
    return Rerun(
        trial,
        str(recorded["status"].iloc[0]),
        outcome.status,
        result_differences(recorded, pd.DataFrame(outcome.rows)),
    )


def result_differences(
    expected: pd.DataFrame, actual: pd.DataFrame, rtol: float = 1e-6, atol: float = 1e-9
) -> dict[str, str]:
    """Numeric result columns that differ between two runs of one trial (checkpoint by
    checkpoint; wall-clock time and bookkeeping excluded), with how."""
    expected = expected.sort_values("step").reset_index(drop=True)
    actual = actual.sort_values("step").reset_index(drop=True)
    if expected["step"].tolist() != actual["step"].tolist():
        return {"step": f"checkpoints {expected['step'].tolist()} != {actual['step'].tolist()}"}
    expected, actual = expected.dropna(axis=1, how="all"), actual.dropna(axis=1, how="all")
    differences = {}
    for column in sorted(set(expected.columns) | set(actual.columns)):
        numeric = [
            pd.api.types.is_numeric_dtype(f[column]) and not pd.api.types.is_bool_dtype(f[column])
            for f in (expected, actual)
            if column in f
        ]
        if column in NOT_RESULTS or not any(numeric):
            continue
        if column not in expected or column not in actual or not all(numeric):
            differences[column] = "present in one run only, or not numeric in both"
            continue
        x, y = expected[column].to_numpy(float), actual[column].to_numpy(float)
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            differences[column] = f"max |difference| {np.nanmax(np.abs(x - y)):.3g}"
    return differences
