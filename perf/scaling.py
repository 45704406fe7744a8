"""Scaling: trials per hour of ``shiftbench run`` with 1 worker and with N workers.

Writes a small study to a temporary folder and runs it through the real CLI (embedded Ray
cluster, worker actors, ledger) once per worker count, each time into a fresh temporary
store. Throughput is the CLI's own count over its own run time ("ran N trials in S s",
which includes starting Ray), and efficiency is throughput(N) / (N * throughput(1));
the target from 1 to 2 workers on 2 cores is >= 85%.

    .venv/bin/python perf/scaling.py [--workers 2] [--trials-per-solver 4] [--steps 150]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

SUMMARY = re.compile(r"ran (\d+) trials in ([\d.]+)s")


def write_study(folder: Path, args: argparse.Namespace) -> Path:
    """Two optimizers on ColoredDigits with a random search, two seeds: 4 * tps trials."""
    study = {
        "name": "scaling",
        "datasets": {"colored_digits": {"test_env": [2]}},
        "objective": {"steps": args.steps, "eval_every": args.steps, "model": "cnn", "width": 16},
        "solvers": {"sgd": {}, "adam": {}},
        "search": {"kind": "random", "trials_per_solver": args.trials_per_solver, "seed": 0},
        "seeds": [0, 1],
    }
    path = folder / "scaling.yml"
    path.write_text(yaml.safe_dump(study))
    return path


def run(study: Path, store: Path, workers: int) -> tuple[int, float]:
    """(trials run, seconds) of one ``shiftbench run``, parsed from its summary line."""
    cli = Path(sys.executable).with_name("shiftbench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(cli), "run", str(study), "--store", str(store), "--workers", str(workers), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    match = SUMMARY.search(result.stdout)
    if result.returncode != 0 or match is None:
        raise SystemExit(
            f"shiftbench run failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr[-2000:]}"
        )
    return int(match.group(1)), float(match.group(2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="N, compared with 1 worker")
    parser.add_argument("--trials-per-solver", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shiftbench-scaling-") as tmp:
        folder = Path(tmp)
        study = write_study(folder, args)
        rates = {}
        for workers in (1, args.workers):
            n, seconds = run(study, folder / f"store-{workers}", workers)
            rates[workers] = 3600.0 * n / seconds
            print(
                f"{workers} worker(s): {n} trials in {seconds:.1f}s = "
                f"{rates[workers]:.0f} trials/h"
            )
    efficiency = rates[args.workers] / (args.workers * rates[1])
    print(
        f"scaling efficiency 1 -> {args.workers} workers: {efficiency:.0%} "
        f"(target >= 85%; {os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
