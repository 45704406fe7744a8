"""The Ray worker actor: a long-lived process holding a :class:`TrialRunner`.

The driver owns the workers' lives: it replaces one that dies or overruns a
trial's time limit, so Ray neither restarts an actor nor retries a task.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import ray

from shiftbench.accel import Accel
from shiftbench.artifacts import Sink
from shiftbench.ensemble import run_group
from shiftbench.runner import MeasureJob, TrialOutcome, TrialRunner
from shiftbench.trial import Trial


@ray.remote(max_restarts=0, max_task_retries=0)
class TrialWorker:
    """Imports torch and loads data once, then runs the trials it is sent."""

    def __init__(self, provenance: dict[str, Any], accel: Accel, sink: Sink | None = None) -> None:
        import torch

        threads = max(1, int(float(os.environ.get("OMP_NUM_THREADS", "1"))))
        torch.set_num_threads(threads)
        where = {
            "hostname": socket.gethostname(),
            "ray_node": ray.get_runtime_context().get_node_id(),
        }
        self.runner = TrialRunner({**provenance, **where}, accel=accel, sink=sink)

    def ready(self) -> bool:
        """Returns once the worker is constructed (the driver waits for it)."""
        return True

    def run(
        self,
        group: list[Trial],
        study: str,
        attempts: list[int],
        measures: tuple[str, ...],
        measure_config: dict[str, Any] | None = None,
    ) -> list[TrialOutcome]:
        """Run one trial, or a group of trials as one vectorized ensemble."""
        return run_group(self.runner, group, study, attempts, measures, measure_config)

    def measure(
        self, job: MeasureJob, study: str, measure_config: dict[str, Any] | None = None
    ) -> TrialOutcome:
        """Compute missing measures on a trial's stored model (no training)."""
        return self.runner.measure(job, study, measure_config)
