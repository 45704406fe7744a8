"""Flushing denormals on the CPU: how much faster quickstart trials run, how much it moves
their numbers.

Runs the quickstart trials (``benchmarks/quickstart.yml``) of some solvers in-process on
one CPU thread, once with ``accel.flush_denormal: false`` (``benchopt run``'s plain loop) and
once with ``true`` (what ``auto`` resolves to on a CPU), and prints per trial the time of
each, the speed-up, the final training loss, ID and OOD accuracy of each, and the largest
difference of any result at any checkpoint, then the totals. By default the 12 RMSProp
trials (where denormals arise: ``sqrt(v) + eps`` with ``v`` decaying towards 0; about 2 min
on 2 cores). Run: ``.venv/bin/python perf/denormals.py [--solvers rmsprop,adam] [--steps N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiftbench.spec.study import load_study  # noqa: E402
from shiftbench.sweep.rerun import result_differences  # noqa: E402
from shiftbench.trials.accel import Accel, can_flush_denormal  # noqa: E402
from shiftbench.trials.runner import TrialRunner  # noqa: E402
from shiftbench.trials.trial import Trial  # noqa: E402


def picked(solvers: list[str], steps: int | None) -> list[Trial]:
    """The quickstart trials of these solvers (both data sets, both seeds), with ``steps``
    if given."""
    study = load_study(ROOT / "benchmarks" / "quickstart.yml")
    out = []
    for solver in solvers:
        trials = [t for t in study.trials() if t.solver == solver]
        if not trials:
            raise SystemExit(f"--solvers: no quickstart trial of {solver!r}")
        out += trials
    if steps is not None:
        out = [
            replace(
                t, objective_params=tuple({**dict(t.objective_params), "steps": steps}.items())
            )
            for t in out
        ]
    return out


def timed_run(runner: TrialRunner, trial: Trial):
    start = time.perf_counter()
    outcome = runner.run(trial, "denormals")
    if outcome.status != "done":
        raise SystemExit(f"{trial.trial_id}: {outcome.status} {outcome.error}")
    return time.perf_counter() - start, outcome.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--solvers", default="rmsprop")
    parser.add_argument("--steps", type=int, default=None, help="default: the study's")
    args = parser.parse_args()
    if not can_flush_denormal():
        raise SystemExit("this CPU cannot flush denormals: nothing to measure")
    torch.set_num_threads(1)  # torch sets the flags per thread; shiftbench's CPU workers use 1
    plain = TrialRunner({}, device="cpu", accel=Accel(flush_denormal=False))
    flushing = TrialRunner({}, device="cpu", accel=Accel(flush_denormal=True))
    table, totals, moved_trials = [], [0.0, 0.0], 0
    warm_up = picked(["sgd"], 2)[0]  # first-trial costs (data, allocator) out of the timings
    plain.run(warm_up, "denormals")
    flushing.run(warm_up, "denormals")
    for trial in picked(args.solvers.split(","), args.steps):
        plain.load_data(trial)  # both time training, not data loading
        flushing.load_data(trial)
        t_plain, rows_plain = timed_run(plain, trial)
        t_flush, rows_flush = timed_run(flushing, trial)
        last_plain, last_flush = rows_plain[-1], rows_flush[-1]
        a, b = pd.DataFrame(rows_plain), pd.DataFrame(rows_flush)
        moved = [c for c in result_differences(a, b, rtol=0, atol=0) if c != "step"]
        largest = max((float(np.nanmax(np.abs(a[c] - b[c]))) for c in moved), default=0.0)
        table.append(
            (
                trial.trial_id,
                trial.dataset,
                trial.seed,
                trial.solver,
                f"{dict(trial.solver_params).get('eps', float('nan')):.2g}",
                f"{t_plain:.1f}",
                f"{t_flush:.1f}",
                f"{t_plain / t_flush:.2f}x",
                f"{last_plain['train_loss']:.5f} / {last_flush['train_loss']:.5f}",
                f"{last_plain['id_acc']:.4f} / {last_flush['id_acc']:.4f}",
                f"{last_plain['ood_acc']:.4f} / {last_flush['ood_acc']:.4f}",
                f"{largest:.2g}",
            )
        )
        print(*table[-1], flush=True)
        totals[0] += t_plain
        totals[1] += t_flush
        moved_trials += bool(moved)
    headers = (
        "trial",
        "data set",
        "seed",
        "solver",
        "eps",
        "s plain",
        "s flush",
        "speed-up",
        "final loss plain / flush",
        "ID acc",
        "OOD acc",
        "max |diff|",
    )
    print(tabulate(table, headers=headers))
    print(
        f"all {len(table)} trials: {totals[0]:.1f} s plain, {totals[1]:.1f} s flushing "
        f"({totals[0] / totals[1]:.2f}x); numbers moved in {moved_trials} of them"
    )


if __name__ == "__main__":
    main()
