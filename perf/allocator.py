"""Keeping freed memory on the CPU (``accel.retain_memory``): how much faster trials run.

Runs the trials of ``perf/overhead.py`` (digits CNN, SGD, ``--steps`` steps evaluated every
``--eval-every``) with the in-process runner on one CPU thread, as a worker does, with
``retain_memory: false`` (glibc's default allocator) and ``true`` (what ``auto`` resolves to
on a CPU). The allocator is the process's, so each setting runs in a fresh process (after
one warm-up trial), ``--rounds`` times in alternating order so that drift in machine speed
hits both alike. Prints seconds and page faults per trial for each, the speed-up, and
whether any recorded number differs. Run:
``.venv/bin/python perf/allocator.py [--trials 6] [--steps 400] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]

# one process: a warm-up trial, then each trial's seconds, page faults and recorded numbers
RUN = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
from perf.overhead import trials
from shiftbench.trials.accel import Accel
from shiftbench.trials.runner import TrialRunner
torch.set_num_threads(1)
runner = TrialRunner({{}}, device="cpu", accel=Accel(retain_memory={retain}))
todo = trials({n}, {steps}, {eval_every})
runner.run(todo[0], "allocator")
out = []
for trial in todo:
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    outcome = runner.run(trial, "allocator")
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    assert outcome.status == "done", outcome.error
    numbers = [[r["train_loss"], r["id_acc"], r["ood_acc"]] for r in outcome.rows]
    out.append({{"seconds": seconds, "faults": faults, "numbers": numbers}})
print(json.dumps(out))
"""


def run(retain: bool, n: int, steps: int, eval_every: int) -> list[dict]:
    """Each trial's seconds, page faults and numbers, run in a fresh process."""
    code = RUN.format(root=str(ROOT), retain=retain, n=n, steps=steps, eval_every=eval_every)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[bool, list[dict]] = {False: [], True: []}
    for round_ in range(args.rounds):
        for retain in (False, True) if round_ % 2 == 0 else (True, False):
            results[retain] += run(retain, args.trials, args.steps, args.eval_every)
    seconds = {k: float(np.median([r["seconds"] for r in v])) for k, v in results.items()}
    faults = {k: float(np.median([r["faults"] for r in v])) for k, v in results.items()}
    same = all(
        a["numbers"] == b["numbers"] for a, b in zip(results[False], results[True], strict=True)
    )
    print(
        f"{args.trials} trials x {args.rounds} rounds of {args.steps} steps, evaluated every "
        f"{args.eval_every} (digits CNN, SGD, one CPU thread), medians per trial:"
    )
    table = [
        ("glibc default (retain_memory: false)", seconds[False], faults[False]),
        ("kept (retain_memory: true = auto)", seconds[True], faults[True]),
    ]
    print(tabulate(table, headers=("allocator", "s/trial", "page faults/trial"), floatfmt=".3f"))
    print(
        f"speed-up {seconds[False] / seconds[True]:.2f}x; recorded numbers "
        f"{'identical' if same else 'DIFFER'} in every trial"
    )


if __name__ == "__main__":
    main()
