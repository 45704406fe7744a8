"""The in-process pool (``--workers 0``): trials and stored-model measures run one by one in
the driver, for debugging and profiling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shiftbench.spec.study import Study
from shiftbench.store import artifacts, schema
from shiftbench.sweep.outcomes import Finished, Group, lost_trial, measured, timeout_text
from shiftbench.sweep.signals import (
    TrialTimeout,
    deadline,
)
from shiftbench.trials.ensemble import run_group
from shiftbench.trials.runner import MeasureJob, TrialRunner
from shiftbench.trials.unit import WorkUnit


def run_in_process(
    pending: list[Group],
    attempts: dict[str, int],
    study: Study,
    provenance: dict[str, Any],
    finished: Finished,
    sink: artifacts.Sink | None = None,
) -> None:
    """Run the groups one by one in the driver (``--workers 0``: debugging and profiling)."""
    runner = TrialRunner(provenance, accel=study.accel, sink=sink)
    for group in pending:
        unit, started = WorkUnit.of(group, attempts, study), datetime.now(UTC)
        try:
            with deadline(study.timeout_s and study.timeout_s * len(group)):
                outcomes = run_group(runner, unit)
        except TrialTimeout:
            outcomes = [
                lost_trial(
                    trial,
                    study.name,
                    attempt,
                    schema.TIMEOUT,
                    timeout_text(study),
                    started,
                    runner.row_provenance(),
                )
                for trial, attempt in zip(unit.trials, unit.attempts)
            ]
        for outcome in outcomes:
            finished(outcome)


def measure_in_process(
    jobs: list[MeasureJob], study: Study, provenance: dict[str, Any], finished: Finished
) -> None:
    """Compute missing measures on stored models in the driver (``--workers 0``)."""
    runner = TrialRunner(provenance, accel=study.accel)
    for job in jobs:
        measured(study, runner.measure(job, study.name, study.measure_config), finished)
