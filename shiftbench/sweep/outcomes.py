"""What the pools report back to the driver: the ``finished`` callback's type, the one-row
outcome of a trial lost without a result, and notices printed above the progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

from tqdm import tqdm

from shiftbench.spec.study import Study
from shiftbench.store import schema
from shiftbench.trials.runner import TrialOutcome
from shiftbench.trials.trial import Trial

Finished = Callable[[TrialOutcome], None]
Group = list[Trial]


def notice(message: str) -> None:
    """A line for the user during a sweep, printed above the progress bar."""
    tqdm.write(message, file=sys.stderr)


def measured(study: Study, outcome: TrialOutcome, finished: Finished) -> None:
    if not outcome.rows:
        last = ["", *outcome.error.strip().splitlines()][-1]
        notice(f"{study.name}: measures of trial {outcome.trial_id} not computed: {last}")
    finished(outcome)


def lost_trial(
    trial: Trial,
    study: str,
    attempt: int,
    status: str,
    error: str,
    started: datetime,
    provenance: dict[str, Any],
) -> TrialOutcome:
    """The one-row outcome of a trial that produced no result of its own (timeout, a worker
    that kept dying, an error outside the runner)."""
    rows = schema.trial_rows(trial, study, attempt, status, error, [], {}, started, provenance)
    return TrialOutcome(trial.trial_id, status, rows, error)


def timeout_text(study: Study) -> str:
    return f"stopped after timeout_s={study.timeout_s:g} seconds"
