"""Run a study's pending trials on Ray and stream their rows into the ledger.

The driver takes the study's lock, finishes what a killed driver left in the
ledger, diffs the study against it, starts (or joins) a Ray cluster, and keeps
a bounded number of trials in flight on long-lived worker actors (torch
imported and data loaded once per worker). Rows are buffered and appended per
batch; Ctrl-C or SIGTERM flushes what finished, and a driver killed outright
loses only unflushed rows, whose trials simply run again: a trial's rows land
in one batch or not at all, so every (trial, attempt, checkpoint) is in the
ledger exactly once.

A worker that dies is replaced and the trial it was running resubmitted (the
trials queued behind it are resubmitted uncharged); a trial that keeps killing
its worker lands as ``failed``. A trial that overruns the study's
``timeout_s`` is stopped for real (its worker is killed and replaced; in the
driver, ``--workers 0``, an alarm interrupts it) and lands as ``timeout``.
Failed and timed-out trials are retried by later runs up to ``retries``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from itertools import groupby, islice
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from shiftbench import artifacts, checkpoint, cluster, faults, store
from shiftbench.ensemble import plan_groups, run_group
from shiftbench.lock import StudyLock
from shiftbench.packing import gpu_fraction, trials_per_gpu
from shiftbench.plugins import benchmark_root
from shiftbench.provenance import static_provenance
from shiftbench.runner import MeasureJob, TrialOutcome, TrialRunner, ledger_rows
from shiftbench.study import Resources, Study, StudyError, id_numbers, in_study
from shiftbench.trial import Trial

IN_FLIGHT_PER_WORKER = 2
# Rows land every FLUSH_TRIALS trials or FLUSH_SECONDS, whichever comes first.
FLUSH_SECONDS = float(os.environ.get("SHIFTBENCH_FLUSH_SECONDS", "10"))
FLUSH_TRIALS = int(os.environ.get("SHIFTBENCH_FLUSH_TRIALS", "64"))
WORKER_DEATHS_ALLOWED = 2
FINAL = ("done", "diverged")
WINDOW = 10_000  # pending trials a run builds and dispatches at a time (bounded memory)
# Columns that legitimately differ between two runs of one trial: wall-clock and bookkeeping.
NOT_RESULTS = frozenset({"attempt", "time", "worker_pid", "sample", "resumed_from_step"})

LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Set by Ray's job supervisor for a job's entrypoint (`ray job submit`, a KubeRay RayJob): the
# job's config, whose runtime_env ray.init merges with the driver's (ray/_private/worker.py,
# init; ray/dashboard/modules/job/job_supervisor.py, _get_driver_env_vars).
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_SETTINGS = "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token"

Finished = Callable[[TrialOutcome], None]
Group = list[Trial]


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
    final = states["status"].isin(FINAL).to_numpy()
    exhausted = ~final & (attempts > study.retries)
    skip = set(id_numbers(ids[final | exhausted]).tolist())
    rest = study.iter_trials(skip)
    pending = list(islice(rest, limit))
    tried = dict(zip(ids.tolist(), attempts.tolist(), strict=True))
    done = ids[(states["status"] == "done").to_numpy()].tolist()
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
    from shiftbench.measures import MeasureConfig

    settings = asdict(MeasureConfig(**study.measure_config))
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


@dataclass
class Summary:
    """Counts of one run, printed at its end."""

    ran: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    interrupted: bool = False
    full: str = ""  # the full disk's error, if the ledger's disk filled up
    unlanded: list[str] = field(default_factory=list)  # trials whose rows did not land

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
) -> Summary:
    """Run (or resume) a study; returns the summary of this run. Done trials that lack some
    of the study's measures get them from their stored models; those without a stored model
    are trained again (a new attempt) only with ``retrain``."""
    store_dir = Path(store_dir)
    with StudyLock(store_dir, study.name):
        store.repair(store_dir, study.name)
        artifacts.repair(store_dir, study.name)
        todo = plan(study, store_dir, WINDOW if max_trials is None else min(max_trials, WINDOW))
        retrained = todo.unstored if retrain else []
        left = todo.pending_count + len(retrained)
        left = left if max_trials is None else min(max_trials, left)
        pending = (todo.pending + retrained)[:left]
        summary = Summary()
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
            bar.update(1)
            bar.set_postfix(dict(sorted(summary.counts.items())), refresh=False)
            writer.add(outcome)  # last: on a full disk it stops the run

        start = time.monotonic()
        try:
            with _sigterm_interrupts():
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


def notice(message: str) -> None:
    """A line for the user during a sweep, printed above the progress bar."""
    tqdm.write(message, file=sys.stderr)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's stop) interrupts the run like Ctrl-C, so finished rows land."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class TrialTimeout(BaseException):
    """An in-process trial overran ``timeout_s`` (a BaseException, so that the runner's
    error handling does not turn it into a ``failed`` row)."""


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in this thread after ``seconds`` (main thread only)."""
    if not seconds or not _in_main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise TrialTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
        group_attempts, started = [attempts[t.trial_id] for t in group], datetime.now(UTC)
        try:
            with _deadline(study.timeout_s and study.timeout_s * len(group)):
                outcomes = run_group(
                    runner,
                    group,
                    study.name,
                    group_attempts,
                    study.measures,
                    study.measure_config,
                )
        except TrialTimeout:
            outcomes = [
                lost_trial(
                    trial,
                    study.name,
                    attempt,
                    "timeout",
                    _timeout_text(study),
                    started,
                    runner.row_provenance(),
                )
                for trial, attempt in zip(group, group_attempts)
            ]
        for outcome in outcomes:
            finished(outcome)


def measure_in_process(
    jobs: list[MeasureJob], study: Study, provenance: dict[str, Any], finished: Finished
) -> None:
    """Compute missing measures on stored models in the driver (``--workers 0``)."""
    runner = TrialRunner(provenance, accel=study.accel)
    for job in jobs:
        _measured(study, runner.measure(job, study.name, study.measure_config), finished)


def measure_on_ray(
    jobs: list[MeasureJob],
    study: Study,
    provenance: dict[str, Any],
    finished: Finished,
    *,
    workers: int | None,
    address: str | None,
) -> None:
    """Compute missing measures on stored models on worker actors, as many at once as fit.
    A worker that dies ends this part of the run in one line; what landed stays, and the next
    run computes the rest."""
    import ray
    from ray.exceptions import RayError
    from ray.util import ActorPool

    _start_ray(workers, address)
    sweep = RaySweep(study, {}, provenance, finished)
    actors = [sweep._spawn() for _ in range(min(sweep.workers_that_fit(workers), len(jobs)))]
    try:
        outcomes = ActorPool(actors).map_unordered(
            lambda actor, job: actor.measure.remote(job, study.name, study.measure_config), jobs
        )
        for outcome in outcomes:
            _measured(study, outcome, finished)
    except RayError as exc:
        notice(f"{study.name}: a worker computing measures died ({type(exc).__name__}); run again")
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _measured(study: Study, outcome: TrialOutcome, finished: Finished) -> None:
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
    rows = ledger_rows(trial, study, attempt, status, error, [], {}, started, provenance)
    return TrialOutcome(trial.trial_id, status, rows, error)


def _timeout_text(study: Study) -> str:
    return f"stopped after timeout_s={study.timeout_s:g} seconds"


class ClusterError(RuntimeError):
    """The Ray cluster cannot be joined (one line saying what to set)."""


def _start_ray(workers: int | None, address: str | None) -> str | None:
    """Start an embedded local cluster (bound to 127.0.0.1, no dashboard), or join ``address``;
    without one, join the local cluster of ``shiftbench cluster start`` while it is up (its
    address is returned then).

    Ray resolves a node address of 127.0.0.1 to the machine's external address and binds its
    servers there unless its single-machine mode is on (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
    read when Ray is imported), so the embedded cluster turns that mode on.

    An unset (or empty) ``RAY_AUTH_MODE`` is ``disabled`` for the embedded cluster; to join
    one it is ``token`` when a token is at hand, as ``ray start`` decides for the clusters it
    starts (ray/_private/authentication/authentication_token_setup.py,
    maybe_enable_token_auth_if_token_available), else ``disabled``.
    """
    if not os.environ.get(AUTH_MODE_ENV):
        os.environ[AUTH_MODE_ENV] = "token" if address and _token_source() else "disabled"
    if not address:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return None
    local = None if address else cluster.running()
    with _sigterm_kept():
        if address:
            _join(address)
            return None
        if os.environ[LOCAL_ONLY_ENV] == "0":  # Ray may have been imported before the variable
            ray_constants.ENABLE_RAY_CLUSTER = False
        if local:  # same machine: the workers load the driver's files
            runtime_env = {"env_vars": {"SHIFTBENCH_ROOT": str(benchmark_root())}}
            ray.init(
                address=local,
                runtime_env=runtime_env,
                log_to_driver=False,
                logging_level="ERROR",
            )
            return local
        ray.init(
            address="local",  # a new cluster, even where `ray start` left one running
            num_cpus=workers or os.cpu_count(),
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            _node_ip_address="127.0.0.1",
        )
    return None


def _join(address: str) -> None:
    """Connect to the cluster at ``address``; a refused token or mode, or no cluster there,
    is a :class:`ClusterError` (Ray retries for about 20 s, then raises a bare
    ``ConnectionError``)."""
    import ray
    from ray.exceptions import RayError

    host, _, port = address.rpartition(":")
    if host and port.isdigit():  # HOST:PORT; Ray would wait many minutes for nothing there
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as exc:
            raise ClusterError(_join_failure(address, str(exc))) from None
    try:
        ray.init(address=address, runtime_env=_runtime_env(), log_to_driver=False)
    except (ConnectionError, RayError) as exc:
        raise ClusterError(_join_failure(address, f"{exc} {exc.__cause__}")) from None


def _join_failure(address: str, error: str) -> str:
    """What to set, given the error text of a failed connection to ``address``."""
    mode, source = os.environ.get(AUTH_MODE_ENV), _token_source()
    if "Authentication" not in error:
        return (
            f"no Ray cluster answers at {address} ({error.strip()}): check the address and "
            f"that the cluster is up (ray status --address {address})"
        )
    if mode != "token":
        return (
            f"the Ray cluster at {address} requires a token and this driver has "
            f"{AUTH_MODE_ENV}={mode}: export {AUTH_MODE_ENV}=token and the cluster's token in "
            f"{TOKEN_SETTINGS}"
        )
    if source is None:
        return f"{AUTH_MODE_ENV}=token but no token: set the cluster's token in {TOKEN_SETTINGS}"
    return (
        f"the Ray cluster at {address} refused this driver's token (from {source}): set the "
        f"cluster's token in {TOKEN_SETTINGS} (the first one set is used), or "
        f"{AUTH_MODE_ENV}=disabled if the cluster runs without tokens"
    )


def _token_source() -> str | None:
    """Where Ray reads this process's cluster token from, in Ray's order, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return f"RAY_AUTH_TOKEN_PATH={path}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


@contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Put back a run's SIGTERM handler after ``ray.init``, which replaces it twice: with a
    Python handler that stops the cluster and exits 1, and with its core worker's C++ failure
    handler, which aborts the driver (exit 134) before the finished rows land."""
    ours = _in_main_thread() and signal.getsignal(signal.SIGTERM) is _interrupt
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGTERM, _interrupt)


def _runtime_env() -> dict[str, Any] | None:
    """Ship the benchmark folder to a remote cluster's workers (results and data stay).

    Inside a Ray job the job's runtime_env already ships the code (the driver runs in its
    working_dir) and is every worker's: ray.init refuses a second ``working_dir`` or
    ``SHIFTBENCH_ROOT``, so the driver adds none."""
    if JOB_CONFIG_ENV in os.environ:
        return None
    root = benchmark_root()
    return {
        "working_dir": str(root),
        "excludes": ["results/", "data/", ".venv/", ".git/", "*.parquet", "*_cache/"],
        "env_vars": {"SHIFTBENCH_ROOT": ".", **faults.worker_env()},
    }


def worker_count(workers: int | None, resources: Resources, cluster: dict[str, float]) -> int:
    """How many worker actors fit the cluster at once (each holds one trial's resources),
    at most ``workers``; an actor that cannot be placed would hang its trials forever, so one
    trial larger than the cluster is a ``ValueError``."""
    fits = [
        cluster.get(name, 0.0) / need + 1e-9
        for name, need in (("CPU", resources.cpus), ("GPU", resources.gpus))
        if need > 0
    ]
    n = int(min(fits)) if fits else workers or int(cluster.get("CPU", 1))
    if n < 1:
        raise ValueError(
            f"one trial needs {resources.cpus:g} CPUs and {resources.gpus:g} "
            f"GPUs; the Ray cluster has {cluster.get('CPU', 0):g} CPUs and "
            f"{cluster.get('GPU', 0):g} GPUs"
        )
    return min(n, workers) if workers else n


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_on_ray(
    pending: list[Group],
    attempts: dict[str, int],
    study: Study,
    provenance: dict[str, Any],
    finished: Finished,
    *,
    workers: int | None,
    address: str | None,
    sink: artifacts.Sink | None = None,
) -> None:
    """Run the groups of trials on worker actors of an embedded or existing Ray cluster."""

    local = _start_ray(workers, address)
    if local:
        notice(f"joined the local cluster at {local} (`shiftbench cluster stop` stops it)")
    sweep = RaySweep(study, attempts, provenance, finished, sink, warm=bool(local))
    if study.resources.pack_gpus:
        pending = sweep.pack(pending)
    sweep.run(pending, sweep.workers_that_fit(workers))
    sweep.retry_alone()


@dataclass
class _Slot:
    """One worker actor and its queued trials' refs, in order: the first is running."""

    actor: Any
    refs: deque = field(default_factory=deque)
    since: float = 0.0


class RaySweep:
    """Keeps ``IN_FLIGHT_PER_WORKER`` trials queued on each worker actor; replaces a worker
    that dies or overruns ``timeout_s`` and charges the loss to the trial it was running.
    Trials that run out of GPU memory are held back and retried alone (``retry_alone``)."""

    def __init__(
        self,
        study: Study,
        attempts: dict[str, int],
        provenance: dict[str, Any],
        finished: Finished,
        sink: artifacts.Sink | None = None,
        *,
        warm: bool = False,
    ) -> None:
        self.study, self.attempts, self.finished = study, attempts, finished
        self.sink = sink
        self.warm = warm  # take the warm workers of the local cluster where they serve
        self.provenance = provenance
        self.lost_provenance = {**provenance, "device": "unknown"}
        self.resources = study.resources
        self.queue: deque[Group] = deque()
        self.running: dict[Any, tuple[_Slot, Group, datetime]] = {}
        self.deaths: dict[str, int] = {}
        self.out_of_memory: list[Group] = []
        self.alone = False
        self.peak_memory = self.device_memory = 0

    @property
    def options(self) -> dict[str, Any]:
        """A worker actor's Ray options: one trial's resources, and the fault settings."""
        options: dict[str, Any] = {
            "num_cpus": self.resources.cpus,
            "num_gpus": self.resources.gpus,
        }
        if faults.worker_env():
            options["runtime_env"] = {"env_vars": faults.worker_env()}
        return options

    def workers_that_fit(self, workers: int | None) -> int:
        """:func:`worker_count` on the cluster; one trial too large for it is a
        :class:`StudyError` on ``resources``, before any trial runs."""
        import ray

        try:
            return worker_count(workers, self.resources, ray.cluster_resources())
        except ValueError as exc:
            raise StudyError(
                self.study.path,
                "resources",
                f"{exc}: ask for less, or join a larger cluster with --address",
            ) from None

    def pack(self, pending: list[Group]) -> list[Group]:
        """``gpus: auto``: run the first group alone on a whole GPU, then set each worker's
        GPU fraction from its peak memory (:mod:`shiftbench.packing`); returns the rest.
        Without a GPU in the cluster, trials run on CPUs."""
        import ray

        if not ray.cluster_resources().get("GPU", 0):
            self.resources = replace(self.resources, gpus=0.0)
            notice(f"{self.study.name}: gpus: auto, but the cluster has no GPU; using CPUs")
            return pending
        self.resources = replace(self.resources, gpus=1.0)
        self.run(pending[:1], self.workers_that_fit(1))
        if not self.device_memory:  # it failed first, or its worker saw no CUDA device
            notice(f"{self.study.name}: no GPU memory measured; one trial per GPU")
            return pending[1:]
        per_gpu = trials_per_gpu(self.peak_memory, self.device_memory)
        self.resources = replace(self.resources, gpus=gpu_fraction(per_gpu))
        notice(
            f"{self.study.name}: a trial peaks at {self.peak_memory / 2**20:.0f} MiB of "
            f"{self.device_memory / 2**30:.0f} GiB: {per_gpu} trials per GPU"
        )
        return pending[1:]

    def retry_alone(self) -> None:
        """Run the trials that ran out of memory again, one at a time on a whole GPU (a
        second out-of-memory lands as ``failed``)."""
        if not self.out_of_memory:
            return
        groups, self.out_of_memory, self.alone = self.out_of_memory, [], True
        notice(f"{self.study.name}: {len(groups)} trials ran out of memory; retrying alone")
        if self.resources.gpus:
            self.resources = replace(self.resources, gpus=max(1.0, self.resources.gpus))
        self.run(groups, 1)

    def run(self, pending: list[Group], n_workers: int) -> None:
        import ray

        self.queue.extend(pending)
        n = min(n_workers, len(pending))
        warm = self._warm_workers(n)
        slots = [_Slot(actor) for actor in warm]
        slots += [_Slot(self._spawn()) for _ in range(n - len(slots))]
        try:
            ray.get([slot.actor.ready.remote() for slot in slots])
            for slot in slots:
                self._fill(slot)
            while self.running:
                ready, _ = ray.wait(
                    list(self.running), num_returns=1, timeout=self._until_deadline(slots)
                )
                if ready:
                    self._collect(ready[0])
                for slot in slots:
                    if self._overran(slot):
                        self._replace(slot, _timeout_text(self.study), timed_out=True)
        finally:
            for slot in slots:  # a warm worker stays, unless it is still busy (interrupted)
                if slot.refs or not any(slot.actor is actor for actor in warm):
                    ray.kill(slot.actor, no_restart=True)

    def _warm_workers(self, n: int) -> list[Any]:
        """Up to ``n`` warm workers of the local cluster, when they hold what one trial asks
        (one CPU, no GPU), run the driver's code, and no fault is set (tests)."""
        import ray

        if not self.warm or self.resources != Resources() or faults.worker_env():
            return []
        actors = cluster.warm_workers()
        code = cluster.code_fingerprint()
        identities = ray.get([actor.identity.remote() for actor in actors])
        fresh = [actor for actor, (theirs, _) in zip(actors, identities) if theirs == code]
        for actor, (theirs, _) in zip(actors, identities):
            if theirs != code:  # replaced by a warm worker that runs the driver's code
                ray.kill(actor, no_restart=True)
        stale = len(actors) - len(fresh)
        chosen = (fresh + cluster.spawn_warm(stale, self.provenance))[:n]
        replaced = f" ({stale} replaced: they ran other code)" if stale else ""
        notice(f"{self.study.name}: {len(chosen)} warm workers{replaced}")
        return chosen

    def _spawn(self) -> Any:
        from shiftbench.worker import TrialWorker

        return TrialWorker.options(**self.options).remote(
            self.provenance, self.study.accel, self.sink
        )

    def _fill(self, slot: _Slot) -> None:
        while len(slot.refs) < IN_FLIGHT_PER_WORKER and self.queue:
            group = self.queue.popleft()
            attempts = [self.attempts[t.trial_id] for t in group]
            ref = slot.actor.run.remote(
                group,
                self.study.name,
                attempts,
                self.study.measures,
                self.study.measure_config,
                (self.provenance, self.study.accel, self.sink),
            )
            if not slot.refs:
                slot.since = time.monotonic()
            slot.refs.append(ref)
            self.running[ref] = (slot, group, datetime.now(UTC))

    def _until_deadline(self, slots: list[_Slot]) -> float | None:
        if not self.study.timeout_s:
            return None
        now = time.monotonic()
        left = [s.since + self._limit(s) - now for s in slots if s.refs]
        return max(min(left, default=self.study.timeout_s), 0.0) + 0.01

    def _limit(self, slot: _Slot) -> float:
        """The running group's time limit: ``timeout_s`` per trial it trains."""
        return self.study.timeout_s * len(self.running[slot.refs[0]][1])

    def _overran(self, slot: _Slot) -> bool:
        timeout = self.study.timeout_s
        return bool(timeout and slot.refs and time.monotonic() - slot.since >= self._limit(slot))

    def _collect(self, ref: Any) -> None:
        slot = self.running[ref][0]
        died = self._land(ref)
        if died is None:
            self._fill(slot)
        else:
            self._replace(slot, f"{type(died).__name__}: {died}"[:2000], timed_out=False)

    def _land(self, ref: Any) -> Exception | None:
        """Land a returned trial's rows; returns the error instead if its worker died."""
        import ray
        from ray.exceptions import RayError, RayTaskError

        slot, group, started = self.running[ref]
        try:
            outcomes = ray.get(ref)
        except RayTaskError as exc:  # an error outside the runner's own handling
            outcomes = [
                lost_trial(
                    trial,
                    self.study.name,
                    self.attempts[trial.trial_id],
                    "failed",
                    str(exc)[-4000:],
                    started,
                    self.lost_provenance,
                )
                for trial in group
            ]
        except RayError as exc:  # the worker process died (killed, crashed, out of memory)
            return exc
        del self.running[ref]
        if slot.refs[0] == ref:
            slot.since = time.monotonic()
        slot.refs.remove(ref)
        for trial, outcome in zip(group, outcomes):
            self.peak_memory = max(self.peak_memory, outcome.peak_memory)
            self.device_memory = max(self.device_memory, outcome.device_memory)
            if outcome.out_of_memory and not self.alone:
                self.out_of_memory.append([trial])
            else:
                self.finished(outcome)
        return None

    def _replace(self, slot: _Slot, reason: str, *, timed_out: bool) -> None:
        """Kill the slot's worker, land or resubmit the trial it was running, resubmit the
        ones queued behind it, and start a fresh worker."""
        import ray

        while slot.refs and ray.wait([slot.refs[0]], timeout=0)[0]:
            if self._land(slot.refs[0]) is not None:  # results that made it back still count
                break
        ray.kill(slot.actor, no_restart=True)
        refs = list(slot.refs)
        slot.refs.clear()
        entries = [self.running.pop(ref) for ref in refs]
        self.queue.extendleft(reversed([group for _, group, _ in entries[1:]]))
        if entries:
            _, group, started = entries[0]
            if len(group) > 1 and not timed_out:  # e.g. out of memory: each trial alone
                self.queue.extendleft([trial] for trial in reversed(group))
                group = []
            for trial in group:
                self._charge(trial, reason, started, timed_out)
        slot.actor = self._spawn()
        ray.get(slot.actor.ready.remote())
        self._fill(slot)

    def _charge(self, trial: Trial, reason: str, started: datetime, timed_out: bool) -> None:
        """Count a worker death against the trial it was running: requeue it, or land it as
        ``timeout`` / ``failed`` once it has killed its worker too often."""
        deaths = self.deaths[trial.trial_id] = self.deaths.get(trial.trial_id, 0) + 1
        if not timed_out and deaths <= WORKER_DEATHS_ALLOWED:
            self.queue.appendleft([trial])
            return
        status, error = (
            ("timeout", reason)
            if timed_out
            else ("failed", f"worker died {deaths} times running this trial; last: {reason}")
        )
        self.finished(
            lost_trial(
                trial,
                self.study.name,
                self.attempts[trial.trial_id],
                status,
                error,
                started,
                self.lost_provenance,
            )
        )


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
