"""Test-only fault hooks: make crash points reachable deterministically.

The reliability tests set ``SHIFTBENCH_FAULTS`` to a JSON list of faults; the
store, the sweep and the trial runner call :func:`hit` at the points where a
crash matters. Unset (always, outside tests) a hit is one environment lookup.

A fault names its point (``at``) and action (``do``), and may narrow it::

    [{"at": "store.part_renamed", "do": "kill"},
     {"at": "trial.start", "trial": "3f2a9c...", "do": "sleep", "seconds": 600,
      "until": "/tmp/t/release", "once": "/tmp/t/started", "log": "/tmp/t/pids"}]

- ``do``: ``kill`` (SIGKILL this process, as a crash or the OOM killer
  would), ``raise`` (:class:`InjectedFault`), ``oom`` (torch's
  ``OutOfMemoryError``, as a GPU out of memory raises it), ``sleep``
  (``seconds``, or until the file ``until`` exists), or ``none``.
- ``trial``: only when that trial hits the point.
- ``nth``: only on this process's n-th matching hit (1-based).
- ``once``: only if this marker file does not exist yet; it is created
  first, so the fault fires once across processes and restarts.
- ``log``: append ``point trial pid`` to this file before acting.

Points: ``store.tmp_written`` (a file is written under its temporary name,
not yet renamed), ``store.part_renamed`` (a compacted part is in place, its
batches not yet deleted), ``store.batch_deleted`` (after each deletion),
``sweep.trial_finished`` (a trial's rows are buffered, not yet written),
``sweep.flushed`` (a batch is written), ``artifacts.tmp_written`` (a model file is
written under its temporary name, not yet renamed), ``trial.start`` (a worker or the
driver starts a trial, inside the runner's error handling), ``checkpoint.saved`` (a trial's
training state is saved, mid-training; the trial is the first of an ensemble's).
"""

from __future__ import annotations

import json
import os
import signal
import time
from functools import cache
from typing import Any

ENV = "SHIFTBENCH_FAULTS"
_hits: dict[tuple[str, int], int] = {}


class InjectedFault(RuntimeError):
    """Raised by a ``raise`` fault."""


@cache
def _parse(spec: str) -> tuple[dict[str, Any], ...]:
    faults = json.loads(spec)
    if not isinstance(faults, list) or not all(isinstance(f, dict) for f in faults):
        raise ValueError(f"{ENV} must be a JSON list of objects, got {spec!r}")
    return tuple(faults)


def hit(point: str, trial: str | None = None) -> None:
    """Act on every fault set for ``point`` (and ``trial``); a no-op when none are set."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    for index, fault in enumerate(_parse(spec)):
        if fault.get("at") != point or fault.get("trial", trial) != trial:
            continue
        key = (spec, index)
        _hits[key] = _hits.get(key, 0) + 1
        if "nth" in fault and _hits[key] != fault["nth"]:
            continue
        if "once" in fault:
            try:
                with open(fault["once"], "x"):
                    pass
            except FileExistsError:
                continue
        if "log" in fault:
            with open(fault["log"], "a") as handle:
                handle.write(f"{point} {trial} {os.getpid()}\n")
        _act(fault, point)


def _act(fault: dict[str, Any], point: str) -> None:
    action = fault.get("do", "none")
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "raise":
        raise InjectedFault(f"fault injected at {point}")
    elif action == "oom":
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (fault injected at {point})")
    elif action == "sleep":
        deadline = time.monotonic() + float(fault.get("seconds", 3600))
        until = fault.get("until")
        while time.monotonic() < deadline and not (until and os.path.exists(until)):
            time.sleep(0.05)
    elif action != "none":
        raise ValueError(f"{ENV}: unknown action {action!r}")


def worker_env() -> dict[str, str]:
    """The fault settings for worker processes started after this one (empty when unset)."""
    spec = os.environ.get(ENV)
    return {ENV: spec} if spec else {}
