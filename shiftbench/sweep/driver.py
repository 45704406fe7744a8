"""Drive a study's run and stream its rows into the ledger.

The driver takes the study's lock, finishes what a killed driver left in the
ledger, plans the run (:mod:`~shiftbench.sweep.planning`), and hands the pending
trials, a window at a time, to a pool: the in-process one (``--workers 0``,
:mod:`~shiftbench.sweep.local`) or worker actors on Ray
(:mod:`~shiftbench.sweep.ray_pool`). Rows are buffered and appended per batch;
Ctrl-C or SIGTERM flushes what finished, and a driver killed outright loses
only unflushed rows, whose trials simply run again: a trial's rows land in one
batch or not at all, so every (trial, attempt, checkpoint) is in the ledger
exactly once. Failed and timed-out trials are retried by later runs up to
``retries``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import groupby, islice
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shiftbench import faults
from shiftbench.plugins.files import benchmark_root
from shiftbench.spec.study import Study
from shiftbench.store import artifacts, checkpoint
from shiftbench.store import ledger as store
from shiftbench.store.lock import StudyLock
from shiftbench.sweep.local import measure_in_process, run_in_process
from shiftbench.sweep.planning import Plan, plan
from shiftbench.sweep.ray_pool import measure_on_ray, run_on_ray
from shiftbench.sweep.signals import sigterm_interrupts
from shiftbench.trials.grouping import plan_groups
from shiftbench.trials.provenance import static_provenance
from shiftbench.trials.runner import TrialOutcome

# Rows land every FLUSH_TRIALS trials or FLUSH_SECONDS, whichever comes first.
FLUSH_SECONDS = float(os.environ.get("SHIFTBENCH_FLUSH_SECONDS", "10"))
FLUSH_TRIALS = int(os.environ.get("SHIFTBENCH_FLUSH_TRIALS", "64"))
WINDOW = 10_000  # pending trials a run builds and dispatches at a time (bounded memory)


@dataclass
class Summary:
    """Counts of one run, printed at its end."""

    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    full: str = ""  # the full disk's error, if the ledger's disk filled up
    unlanded: list[str] = field(default_factory=list)  # trials whose rows did not land
    plan: Plan | None = None  # the run's plan, brought up to date with what it finished

    def add(self, status: str) -> None:
        self.ran += 1
        self.counts[status] = self.counts.get(status, 0) + 1


class StoreFull(Exception):
    """The ledger's disk is full: the run stops; the rows that did not land are held."""


class LedgerWriter:
    """Buffers finished trials' rows and appends them per batch (a trial never straddles
    two batches). On a full disk each trial's rows are appended alone, so every trial that
    fits lands; the others' rows stay in the buffer for the next flush, and ``full`` says
    why (then :meth:`add` raises :class:`StoreFull`: the run stops)."""

    def __init__(self, store_dir: Path, study: str, drop_checkpoints: bool = False) -> None:
        self.store_dir, self.study = store_dir, study
        self.drop_checkpoints = drop_checkpoints  # landed trials' training states are removed
        self.rows: list[dict[str, Any]] = []
        self.trials = 0
        self.last_flush = time.monotonic()
        self.full = ""

    def add(self, outcome: TrialOutcome) -> None:
        self.rows.extend(outcome.rows)
        self.trials += 1
        faults.hit("sweep.trial_finished", outcome.trial_id)
        if self.trials >= FLUSH_TRIALS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()
        if self.full:
            raise StoreFull(self.full)

    def flush(self) -> None:
        # Taken out of the buffer first: if the append fails, those trials simply run again,
        # where retrying the same rows could land them twice. A full disk fails before the
        # rename (no temporary stays), so those rows are safe to append again.
        rows, self.rows, self.trials, self.last_flush = self.rows, [], 0, time.monotonic()
        try:
            store.append(self.store_dir, self.study, rows)
        except OSError as exc:
            if not store.is_full(exc):
                raise
            self.rows = self._land_what_fits(rows)
            self.full = str(exc) if self.rows else ""
            return
        faults.hit("sweep.flushed")
        self._landed(rows)
        self.compact(store.COMPACT_THRESHOLD)

    def _land_what_fits(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append each trial's rows alone; returns the rows that did not fit."""
        held = []
        for _, trial_rows in groupby(rows, key=lambda row: row["trial_id"]):
            batch = list(trial_rows)
            try:
                store.append(self.store_dir, self.study, batch)
            except OSError as exc:
                if not store.is_full(exc):
                    raise
                held.extend(batch)
                continue
            self._landed(batch)
        return held

    def _landed(self, rows: list[dict[str, Any]]) -> None:
        if self.drop_checkpoints:
            checkpoint.remove(self.store_dir, self.study, (row["trial_id"] for row in rows))

    def compact(self, threshold: int = 1) -> None:
        """Compact the batches; on a full disk they stay as they are (and read the same)."""
        try:
            store.compact(self.store_dir, self.study, threshold=threshold)
        except OSError as exc:
            if not store.is_full(exc):
                raise

    @property
    def unlanded(self) -> list[str]:
        """The trials whose rows are held (did not land)."""
        return sorted({row["trial_id"] for row in self.rows})


def run_study(
    study: Study,
    store_dir: Path,
    *,
    workers: int | None = None,
    address: str | None = None,
    max_trials: int | None = None,
    progress: bool = True,
    retrain: bool = False,
    on_plan: Callable[[Plan], None] | None = None,
) -> Summary:
    """Run (or resume) a study; returns the summary of this run. Done trials that lack some
    of the study's measures get them from their stored models; those without a stored model
    are trained again (a new attempt) only with ``retrain``. ``on_plan`` sees the run's plan
    before anything is written (the CLI announces it and checks the pending trials' data
    there); it is made once, and again under the study's lock only if the ledger's files
    changed in between."""
    store_dir = Path(store_dir)
    window = WINDOW if max_trials is None else min(max_trials, WINDOW)
    seen = _ledger_files(store_dir, study.name)
    todo = plan(study, store_dir, window)  # before the lock: a check that fails writes nothing
    if on_plan is not None:
        on_plan(todo)
    with StudyLock(store_dir, study.name):
        store.repair(store_dir, study.name)
        artifacts.repair(store_dir, study.name)
        if _ledger_files(store_dir, study.name) != seen:  # another run, or a repair, since
            todo = plan(study, store_dir, window)
        retrained = todo.unstored if retrain else []
        left = todo.pending_count + len(retrained)
        left = left if max_trials is None else min(max_trials, left)
        pending = (todo.pending + retrained)[:left]
        summary = Summary(plan=todo)
        if not pending and not todo.measure:
            return summary
        provenance = {**static_provenance(benchmark_root()), **study.search_columns()}
        writer = LedgerWriter(
            store_dir, study.name, study.checkpoint_every > 0 and study.keep != "checkpoints"
        )
        keep = study.keep != "none"
        sink = (
            artifacts.Sink(str(store_dir.resolve()), study.keep, study.checkpoint_every)
            if keep or study.checkpoint_every
            else None
        )
        bar = tqdm(
            total=left + len(todo.measure),
            desc=study.name,
            unit="trial",
            disable=not progress,
            dynamic_ncols=True,
        )

        def finished(outcome: TrialOutcome) -> None:
            summary.add(outcome.status)
            todo.record(outcome, study.retries)
            bar.update(1)
            bar.set_postfix(dict(sorted(summary.counts.items())), refresh=False)
            writer.add(outcome)  # last: on a full disk it stops the run

        start = time.monotonic()
        try:
            with sigterm_interrupts():
                while pending:  # one window of built trials at a time
                    attempts = {t.trial_id: todo.attempts.get(t.trial_id, 0) for t in pending}
                    groups = plan_groups(
                        pending,
                        study.ensemble,
                        uses_gpu=study.resources.gpus > 0 or (workers == 0 and _has_cuda()),
                        # a vectorized ensemble neither measures nor stores its members' models
                        measures=bool(study.measures) or keep,
                        parallel=max(workers or os.cpu_count() or 1, 1),
                    )
                    if workers == 0:
                        run_in_process(groups, attempts, study, provenance, finished, sink)
                    else:
                        run_on_ray(
                            groups,
                            attempts,
                            study,
                            provenance,
                            finished,
                            workers=workers,
                            address=address,
                            sink=sink,
                        )
                    left -= len(pending)
                    pending = list(islice(todo.rest, min(left, WINDOW)))
                if workers == 0:
                    measure_in_process(todo.measure, study, provenance, finished)
                elif todo.measure:
                    measure_on_ray(
                        todo.measure,
                        study,
                        provenance,
                        finished,
                        workers=workers,
                        address=address,
                    )
        except KeyboardInterrupt:
            summary.interrupted = True
        except StoreFull:
            pass  # the rows that fit have landed; the others are flushed once more below
        finally:
            writer.flush()
            writer.compact()
            summary.full, summary.unlanded = writer.full, writer.unlanded
            bar.close()
            summary.seconds = time.monotonic() - start
        return summary


def _ledger_files(store_dir: Path, study: str) -> frozenset[tuple[str, int, int]]:
    """Name, size and modification time of each of the study's ledger files (one that
    vanishes meanwhile, compacted by another run, is left out: the sets differ anyway)."""
    files = set()
    for path in store.study_dir(store_dir, study).glob("*.parquet"):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            files.add((path.name, stat.st_size, stat.st_mtime_ns))
    return frozenset(files)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
