"""Run a study's pending trials on Ray and stream their rows into the ledger.

The driver diffs the study against the ledger, starts (or joins) a Ray
cluster, and keeps a bounded number of trials in flight on long-lived
worker actors (torch imported and data loaded once per worker). Trials are
ordered by data set so each worker keeps reusing what it has loaded. Rows
are buffered and appended per batch; Ctrl-C flushes what finished. A worker
that dies is replaced and its trial resubmitted; a trial that keeps killing
its worker lands as ``failed``.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shiftbench import store
from shiftbench.lock import StudyLock
from shiftbench.plugins import benchmark_root
from shiftbench.provenance import static_provenance
from shiftbench.runner import TrialOutcome, TrialRunner, ledger_rows
from shiftbench.study import Study
from shiftbench.trial import Trial

IN_FLIGHT_PER_WORKER = 2
FLUSH_SECONDS = 10.0
FLUSH_TRIALS = 64
WORKER_DEATHS_ALLOWED = 2
FINAL = ("done", "diverged")


@dataclass
class Plan:
    """What a run will do: the study's trials split by their state in the ledger."""

    trials: list[Trial]
    attempts: dict[str, int]
    pending: list[Trial]
    exhausted: list[Trial]
    states: dict[str, str]


def plan(study: Study, store_dir: Path) -> Plan:
    """Diff the study against the ledger: done and diverged trials are final; failed ones
    are retried while they have attempts left (1 + ``study.retries``)."""
    trials = study.trials()
    ledger = store.read(store_dir, study.name)
    states = store.trial_states(ledger).set_index("trial_id")
    status = states["status"].to_dict() if len(states) else {}
    attempts = states["attempts"].to_dict() if len(states) else {}
    pending, exhausted = [], []
    for trial in trials:
        tid = trial.trial_id
        if status.get(tid) in FINAL:
            continue
        (pending if attempts.get(tid, 0) <= study.retries else exhausted).append(trial)
    return Plan(trials, {t.trial_id: attempts.get(t.trial_id, 0) for t in trials}, pending,
                exhausted, status)


@dataclass
class Summary:
    """Counts of one run, printed at its end."""

    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False

    def add(self, status: str) -> None:
        self.ran += 1
        self.counts[status] = self.counts.get(status, 0) + 1


class LedgerWriter:
    """Buffers finished trials' rows and appends them per batch."""

    def __init__(self, store_dir: Path, study: str) -> None:
        self.store_dir, self.study = store_dir, study
        self.rows: list[dict[str, Any]] = []
        self.trials = 0
        self.last_flush = time.monotonic()

    def add(self, outcome: TrialOutcome) -> None:
        self.rows.extend(outcome.rows)
        self.trials += 1
        if self.trials >= FLUSH_TRIALS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        store.append(self.store_dir, self.study, self.rows)
        self.rows, self.trials, self.last_flush = [], 0, time.monotonic()
        store.compact(self.store_dir, self.study, threshold=store.COMPACT_THRESHOLD)


def run_study(
    study: Study, store_dir: Path, *, workers: int | None = None, address: str | None = None,
    max_trials: int | None = None, progress: bool = True,
) -> Summary:
    """Run (or resume) a study; returns the summary of this run."""
    store_dir = Path(store_dir)
    with StudyLock(store_dir, study.name):
        todo = plan(study, store_dir)
        pending = todo.pending[:max_trials] if max_trials is not None else todo.pending
        summary = Summary()
        if not pending:
            return summary
        provenance = static_provenance(benchmark_root())
        writer = LedgerWriter(store_dir, study.name)
        bar = tqdm(total=len(pending), desc=study.name, unit="trial", disable=not progress,
                   dynamic_ncols=True)

        def finished(outcome: TrialOutcome) -> None:
            writer.add(outcome)
            summary.add(outcome.status)
            bar.update(1)
            bar.set_postfix({k: v for k, v in sorted(summary.counts.items())}, refresh=False)

        start = time.monotonic()
        try:
            if workers == 0:
                run_in_process(pending, todo.attempts, study, provenance, finished)
            else:
                run_on_ray(pending, todo.attempts, study, provenance, finished,
                           workers=workers, address=address)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            writer.flush()
            store.compact(store_dir, study.name)
            bar.close()
            summary.seconds = time.monotonic() - start
        return summary


def run_in_process(pending, attempts, study, provenance, finished) -> None:
    """Run trials one by one in the driver (``--workers 0``: debugging and profiling)."""
    runner = TrialRunner(provenance)
    for trial in pending:
        finished(runner.run(trial, study.name, attempts[trial.trial_id], study.measures))


def _start_ray(workers: int | None, address: str | None) -> int:
    """Start an embedded local cluster, or join ``address``; returns the worker count."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count(), include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR",
                     _node_ip_address="127.0.0.1")
    return workers or int(ray.cluster_resources().get("CPU", 1))


def _runtime_env() -> dict[str, Any]:
    """Ship the benchmark folder to a remote cluster's workers (results and data stay)."""
    root = benchmark_root()
    return {"working_dir": str(root),
            "excludes": ["results/", "data/", ".venv/", ".git/", "*.parquet"],
            "env_vars": {"SHIFTBENCH_ROOT": "."}}


def run_on_ray(pending, attempts, study, provenance, finished, *, workers, address) -> None:
    """Keep ``IN_FLIGHT_PER_WORKER`` trials queued on each long-lived worker actor."""
    import ray
    from ray.exceptions import RayActorError, WorkerCrashedError

    from shiftbench.worker import TrialWorker

    n_workers = _start_ray(workers, address)
    options = {"num_cpus": study.resources.cpus, "num_gpus": study.resources.gpus}
    actors = [TrialWorker.options(**options).remote(provenance) for _ in range(n_workers)]
    queue: deque[Trial] = deque(pending)
    deaths: dict[str, int] = {}
    in_flight: dict[Any, tuple[Trial, int]] = {}

    def submit(slot: int) -> None:
        if queue:
            trial = queue.popleft()
            ref = actors[slot].run.remote(trial, study.name, attempts[trial.trial_id],
                                          study.measures)
            in_flight[ref] = (trial, slot)

    for slot in range(len(actors)):
        for _ in range(IN_FLIGHT_PER_WORKER):
            submit(slot)
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        trial, slot = in_flight.pop(ref)
        try:
            finished(ray.get(ref))
        except (RayActorError, WorkerCrashedError) as exc:
            deaths[trial.trial_id] = deaths.get(trial.trial_id, 0) + 1
            if deaths[trial.trial_id] > WORKER_DEATHS_ALLOWED:
                finished(worker_died(trial, study.name, attempts[trial.trial_id], exc,
                                     provenance))
            else:
                queue.appendleft(trial)
        submit(slot)


def worker_died(trial: Trial, study: str, attempt: int, exc: Exception,
                provenance: dict[str, Any]) -> TrialOutcome:
    """The ``failed`` outcome of a trial whose worker process kept dying under it."""
    error = f"worker died {WORKER_DEATHS_ALLOWED + 1} times running this trial: {exc}"
    rows = ledger_rows(trial, study, attempt, "failed", error, [], {}, datetime.now(UTC),
                       {**provenance, "device": "unknown"})
    return TrialOutcome(trial.trial_id, "failed", rows, error)
