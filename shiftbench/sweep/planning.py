"""Planning a run: the study diffed against its ledger (what is done, pending, exhausted,
and which done trials lack measures), on 64-bit trial-id numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import pandas as pd

from shiftbench.spec.study import Study, id_numbers, in_study
from shiftbench.store import artifacts, schema
from shiftbench.store import ledger as store
from shiftbench.trials.runner import MeasureJob, TrialOutcome
from shiftbench.trials.trial import Trial


@dataclass
class Plan:
    """What a run will do: the study's trials split by their state in the ledger. Only the
    pending trials a run dispatches are built; the others are counted."""

    total: int  # trials in the study
    pending: list[Trial]  # the first pending trials, up to plan's ``limit``, in study order
    pending_count: int  # all of them
    exhausted: list[str]  # ids of the failed trials that have used all their attempts
    attempts: dict[str, int]  # attempts so far of the study's ledger trials and of ``pending``
    states: dict[str, str]  # the latest status of the study's ledger trials
    rest: Iterator[Trial] = field(default_factory=lambda: iter(()))  # pending after ``pending``
    # done trials that lack some of the study's measures: computed on their stored models,
    # or (no model stored) listed, to be trained again only if the user asks
    measure: list[MeasureJob] = field(default_factory=list)
    unstored: list[Trial] = field(default_factory=list)
    skip: set[int] = field(default_factory=set)  # id numbers of the trials not pending

    def record(self, outcome: TrialOutcome, retries: int) -> None:
        """Count a trial this run finished, so the plan says what is left after the run
        without reading the ledger again: a final status, or a failure that used its last
        attempt, leaves the pending ones."""
        trial_id, status = outcome.trial_id, outcome.status
        if status not in schema.STATUSES:  # measures computed on a stored model
            return
        before = self.states.get(trial_id)
        self.states[trial_id] = status
        self.attempts[trial_id] = self.attempts.get(trial_id, 0) + 1
        if before in schema.FINISHED:  # a done trial trained again (``--retrain``)
            return
        if status in schema.FINISHED:
            self.pending_count -= 1
        elif self.attempts[trial_id] > retries:
            self.pending_count -= 1
            self.exhausted.append(trial_id)


def plan(study: Study, store_dir: Path, limit: int | None = None) -> Plan:
    """Diff the study against the ledger: done and diverged trials are final; failed and
    timed-out ones are retried while they have attempts left (1 + ``study.retries``); done
    trials missing measures (:func:`_measure_jobs`) get them from their stored models.

    The diff runs on the trials' 64-bit id numbers (:attr:`Study.trial_numbers`), and only
    the first ``limit`` pending trials (all when None) and the done trials missing measures
    are built, so a million-trial study is planned in seconds and a run holds only the trials
    it dispatches."""
    ledger = store.read(store_dir, study.name)
    states = store.trial_states(ledger)
    states = states[in_study(states["trial_id"], study.trial_numbers)]
    ids, attempts = states["trial_id"].to_numpy(), states["attempts"].to_numpy(dtype=int)
    final = states["status"].isin(schema.FINISHED).to_numpy()
    exhausted = ~final & (attempts > study.retries)
    skip = set(id_numbers(ids[final | exhausted]).tolist())
    rest = study.iter_trials(skip)
    pending = list(islice(rest, limit))
    tried = dict(zip(ids.tolist(), attempts.tolist(), strict=True))
    done = ids[(states["status"] == schema.DONE).to_numpy()].tolist()
    measure, unstored = _measure_jobs(study, store_dir, ledger, done)
    return Plan(
        total=len(study.trial_numbers),
        pending=pending,
        pending_count=len(study.trial_numbers) - int(final.sum()) - int(exhausted.sum()),
        exhausted=ids[exhausted].tolist(),
        attempts={**tried, **{t.trial_id: tried.get(t.trial_id, 0) for t in pending}},
        states=dict(zip(ids.tolist(), states["status"], strict=True)),
        rest=rest,
        measure=measure,
        unstored=unstored,
        skip=skip,
    )


class _AllBut:
    """A ``skip`` for :meth:`Study.iter_trials` that builds only the trials of ``keep``."""

    def __init__(self, keep: set[int]) -> None:
        self.keep = keep

    def __contains__(self, number: object) -> bool:
        return number not in self.keep


def _measure_jobs(
    study: Study, store_dir: Path, ledger: pd.DataFrame, done: list[str]
) -> tuple[list[MeasureJob], list[Trial]]:
    """Done trials (ids) lacking measures: jobs on their stored models, and those without
    one; only these trials are built."""
    if not study.measures or not done:
        return [], []
    settings = asdict(study.measure_config)
    gaps = artifacts.measure_gaps(store_dir, study.name, ledger, done, study.measures, settings)
    if not gaps:
        return [], []
    wanted = set(id_numbers(g.trial_id for g in gaps).tolist())
    by_id = {t.trial_id: t for t in study.iter_trials(_AllBut(wanted))}
    jobs = [
        MeasureJob(by_id[g.trial_id], g.attempt, g.step, g.names, g.history, g.path)
        for g in gaps
        if g.path
    ]
    return jobs, [by_id[g.trial_id] for g in gaps if not g.path]
