"""The Ray worker actor: a long-lived process holding a :class:`TrialRunner`.

The driver owns the workers' lives: it replaces one that dies or overruns a
trial's time limit, so Ray neither restarts an actor nor retries a task.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import ray

from shiftbench.measures.config import DEFAULT_CONFIG, MeasureConfig
from shiftbench.store import schema
from shiftbench.store.artifacts import Sink
from shiftbench.sweep.cluster import code_fingerprint
from shiftbench.trials.accel import Accel
from shiftbench.trials.ensemble import run_group
from shiftbench.trials.runner import MeasureJob, TrialOutcome, TrialRunner
from shiftbench.trials.unit import WorkUnit


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """Imports torch and loads data once, then runs the trials it is sent."""

    def __init__(self, provenance: dict[str, Any], accel: Accel, sink: Sink | None = None) -> None:
        import torch

        threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
        torch.set_num_threads(threads)
        self.where = schema.provenance(
            hostname=socket.gethostname(), ray_node=ray.get_runtime_context().get_node_id()
        )
        self.runner = TrialRunner({**provenance, **self.where}, accel=accel, sink=sink)
        self.code = code_fingerprint()
        # per thread: set before the first parallel op, so torch's intra-op threads inherit it
        torch.set_flush_denormal(self.runner.accel.flush_denormal)

    def ready(self) -> bool:
        """Returns once the worker is constructed (the driver waits for it)."""
        return True

    def identity(self) -> tuple[str, int]:
        """The fingerprint of the code it runs, and its pid (a warm worker serves a run
        only when the driver's code is the same)."""
        return self.code, os.getpid()

    def run(
        self,
        unit: WorkUnit,
        context: tuple[dict[str, Any], Accel, Sink | None] | None = None,
    ) -> list[TrialOutcome]:
        """Run one trial, or a group of trials as one vectorized ensemble; ``context``: the
        driver's provenance, fast-path settings and model sink (a warm worker serves many
        runs)."""
        if context is not None:
            provenance, accel, sink = context
            self.runner.provenance = {**provenance, **self.where}
            self.runner.accel = accel.resolve(self.runner.device)
            self.runner.sink = sink
        return run_group(self.runner, unit)

    def measure(
        self, job: MeasureJob, study: str, measure_config: MeasureConfig = DEFAULT_CONFIG
    ) -> TrialOutcome:
        """Compute missing measures on a trial's stored model (no training)."""
        return self.runner.measure(job, study, measure_config)
