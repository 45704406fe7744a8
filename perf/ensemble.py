"""Trials per hour: K vectorized members (shiftbench.trials.ensemble) vs K sequential runs.

Both sides are the real paths: ``TrialRunner.run`` for a sequential trial and
``run_ensemble`` for a group, each with its checkpoint evaluations (at step 0 and at the
end) and its ledger rows. Sequential throughput does not depend on K, so it is timed on a
few runs and reported once per device. Runs on the CPU, and on the GPU when there is one.

    .venv/bin/python perf/ensemble.py [--steps 30] [--k 1,8,32,128] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import time

import torch

from shiftbench.plugins import registry
from shiftbench.trials.ensemble import run_ensemble
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial


def make_trials(n: int, model: str, args: argparse.Namespace) -> list[Trial]:
    """``n`` Adam trials on ColoredDigits with log-uniform learning rates and distinct seeds."""
    objective = {
        k: v for k, v in registry.defaults(registry.objective_class()).items() if k != "seed"
    }
    objective.update(steps=args.steps, eval_every=args.steps, model=model, width=args.width)
    solver = registry.defaults(registry.solver_class("adam"))
    lrs = torch.logspace(-4, -2, max(n, 2), dtype=torch.float64).tolist()
    return [
        Trial.make(
            "colored_digits", {"test_env": 2}, objective, "adam", {**solver, "lr": lrs[i]}, seed=i
        )
        for i in range(n)
    ]


def trials_per_hour(n: int, seconds: float) -> float:
    return 3600.0 * n / seconds


def measure(device: str, model: str, args: argparse.Namespace) -> list[tuple[int, float, float]]:
    """(K, vectorized trials/h, sequential trials/h) for each K."""
    runner = TrialRunner({}, device=device)
    ks = [int(k) for k in args.k.split(",")]
    trials = make_trials(max(ks), model, args)
    run_ensemble(runner, trials[:2], "perf", [0, 0])  # warm up: data, kernels, allocator
    started = time.perf_counter()
    n_seq = min(args.sequential, len(trials))
    for trial in trials[:n_seq]:
        assert runner.run(trial, "perf").status == "done"
    sequential = trials_per_hour(n_seq, time.perf_counter() - started)
    rows = []
    for k in ks:
        started = time.perf_counter()
        outcomes = run_ensemble(runner, trials[:k], "perf", [0] * k)
        elapsed = time.perf_counter() - started
        assert len({o.rows[-1]["time"] for o in outcomes}) == 1, "fell back to sequential"
        rows.append((k, trials_per_hour(k, elapsed), sequential))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per trial")
    parser.add_argument("--k", default="1,8,32,128", help="ensemble sizes, comma-separated")
    parser.add_argument("--models", default="mlp,cnn", help="digits models, comma-separated")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument(
        "--sequential", type=int, default=4, help="sequential runs timed for the baseline"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1, as in a sweep worker)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"Adam on ColoredDigits, width {args.width}, {args.steps} steps, evaluated at start "
        f"and end; torch threads {torch.get_num_threads()}"
    )
    print(
        f"{'device':>6} {'model':>5} {'K':>4} {'vectorized/h':>13} {'sequential/h':>13} "
        f"{'ratio':>6}"
    )
    for device in devices:
        for model in args.models.split(","):
            for k, vec, seq in measure(device, model, args):
                print(f"{device:>6} {model:>5} {k:>4} {vec:>13.0f} {seq:>13.0f} {vec / seq:>6.2f}")


if __name__ == "__main__":
    main()
