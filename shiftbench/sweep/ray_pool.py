"""The Ray pool: a study's trials on long-lived worker actors of an embedded or joined cluster.

It starts (or joins) a Ray cluster (``sweep.connect``) and keeps a bounded number of trials in
flight on each worker actor (torch imported and data loaded once per worker).
A worker that dies is replaced and the trial it was running resubmitted (the
trials queued behind it are resubmitted uncharged); a trial that keeps killing
its worker lands as ``failed``. A trial that overruns the study's
``timeout_s`` is stopped for real (its worker is killed and replaced) and
lands as ``timeout``.

The trial "it was running" is the oldest of the worker's trials in flight. When a worker
dies just after finishing one trial, at the start of the next, Ray may not yet have sent
the finished trial's result back: that result is lost with the worker, and the death is
charged to the finished trial, which runs again. Such a trial is charged a death it did
not cause; ``WORKER_DEATHS_ALLOWED`` deaths per trial absorb it.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shiftbench import faults
from shiftbench.spec.study import Resources, Study, StudyError
from shiftbench.store import artifacts, schema
from shiftbench.sweep import cluster
from shiftbench.sweep.connect import start_ray
from shiftbench.sweep.outcomes import Finished, Group, lost_trial, measured, notice, timeout_text
from shiftbench.sweep.packing import gpu_fraction, trials_per_gpu
from shiftbench.trials.runner import MeasureJob
from shiftbench.trials.trial import Trial
from shiftbench.trials.unit import WorkUnit

IN_FLIGHT_PER_WORKER = 2
WORKER_DEATHS_ALLOWED = 2


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

    local = start_ray(workers, address)
    if local:
        notice(f"joined the local cluster at {local} (`shiftbench cluster stop` stops it)")
    sweep = RaySweep(study, attempts, provenance, finished, sink, warm=bool(local))
    if study.resources.pack_gpus:
        pending = sweep.pack(pending)
    sweep.run(pending, sweep.workers_that_fit(workers))
    sweep.retry_alone()


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

    start_ray(workers, address)
    sweep = RaySweep(study, {}, provenance, finished)
    actors = [sweep._spawn() for _ in range(min(sweep.workers_that_fit(workers), len(jobs)))]
    try:
        outcomes = ActorPool(actors).map_unordered(
            lambda actor, job: actor.measure.remote(job, study.name, study.measure_config), jobs
        )
        for outcome in outcomes:
            measured(study, outcome, finished)
    except RayError as exc:
        notice(f"{study.name}: a worker computing measures died ({type(exc).__name__}); run again")
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


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
        self.lost_provenance = {**provenance, **schema.provenance(device="unknown")}
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
        GPU fraction from its peak memory (:mod:`shiftbench.sweep.packing`); returns the rest.
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
                        self._replace(slot, timeout_text(self.study), timed_out=True)
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
        from shiftbench.trials.worker import TrialWorker

        return TrialWorker.options(**self.options).remote(
            self.provenance, self.study.accel, self.sink
        )

    def _fill(self, slot: _Slot) -> None:
        while len(slot.refs) < IN_FLIGHT_PER_WORKER and self.queue:
            unit = WorkUnit.of(self.queue.popleft(), self.attempts, self.study)
            ref = slot.actor.run.remote(unit, (self.provenance, self.study.accel, self.sink))
            if not slot.refs:
                slot.since = time.monotonic()
            slot.refs.append(ref)
            self.running[ref] = (slot, unit, datetime.now(UTC))

    def _until_deadline(self, slots: list[_Slot]) -> float | None:
        if not self.study.timeout_s:
            return None
        now = time.monotonic()
        left = [s.since + self._limit(s) - now for s in slots if s.refs]
        return max(min(left, default=self.study.timeout_s), 0.0) + 0.01

    def _limit(self, slot: _Slot) -> float:
        """The running group's time limit: ``timeout_s`` per trial it trains."""
        return self.study.timeout_s * len(self.running[slot.refs[0]][1].trials)

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

        slot, unit, started = self.running[ref]
        try:
            outcomes = ray.get(ref)
        except RayTaskError as exc:  # an error outside the runner's own handling
            outcomes = [
                lost_trial(
                    trial,
                    self.study.name,
                    attempt,
                    schema.FAILED,
                    str(exc)[-4000:],
                    started,
                    self.lost_provenance,
                )
                for trial, attempt in zip(unit.trials, unit.attempts)
            ]
        except RayError as exc:  # the worker process died (killed, crashed, out of memory)
            return exc
        del self.running[ref]
        if slot.refs[0] == ref:
            slot.since = time.monotonic()
        slot.refs.remove(ref)
        for trial, outcome in zip(unit.trials, outcomes):
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
        self.queue.extendleft(reversed([list(unit.trials) for _, unit, _ in entries[1:]]))
        if entries:
            _, unit, started = entries[0]
            group = list(unit.trials)
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
            (schema.TIMEOUT, reason)
            if timed_out
            else (schema.FAILED, f"worker died {deaths} times running this trial; last: {reason}")
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
