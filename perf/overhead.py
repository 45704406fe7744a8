"""Harness overhead per trial, measured side by side in one run.

The same training (digits CNN, SGD, ``--steps`` steps, evaluation every
``--eval-every``) is timed five ways on the same trial configurations:

1. a bare PyTorch loop written by hand (the baseline: zero harness);
2. shiftbench's in-process trial runner (``TrialRunner.run``);
3. shiftbench's sweep on an embedded Ray cluster with one long-lived worker, once
   with the cluster's start-up amortized over the trials, once with it running, and
   for a study twice as long as the runner's overhead plus the sweep's own time outside
   trials per trial (wall time minus the worker's time inside trials, from the ledger's
   start and end times: a figure that machine-speed drift between ways cannot skew); its
   steady state is the same figure per *extra* trial, without each run's start-up (from
   the run's start to its first trial's start: connecting to Ray, planning, starting the
   worker, paid once per run and varying by tenths of a second from run to run, which
   would otherwise swamp a per-trial figure): the long study's time outside trials after
   its start-up minus the short one's, over the extra trials. The mean gap between one
   trial's end and the next one's start on the worker is printed beside it;
4. Ray Tune, the alternative a user would pick: a ``Tuner`` over the same trainings (a
   function trainable calling the runner, one trial at a time like the one-worker sweep),
   with default settings and with actor reuse (``TuneConfig(reuse_actors=True)``);
5. ``benchopt run`` on the same configurations (one invocation for all);
6. one process per trial, DomainBed style (``python -c`` running one trial).

Overhead per trial = seconds per trial minus the bare loop's. The bare loop and the
in-process runner train each trial in lock step: the runner's checkpoint callback, wrapped
here (``Lockstep``), advances the bare loop by one step at each of its calls and times that
step apart. Back-to-back runs of one trial on a shared VM differ by up to ±20%, which
swamped a per-trial comparison (the runner measured between +1.6% and +8.4% in two runs of
the earlier back-to-back method); step by step, two bare loops agree to within 0.6%. The
runner's overhead is the median over ``--rounds`` rounds of the trials of its paired
difference with the bare loop. Run:
``.venv/bin/python perf/overhead.py [--trials 6] [--sweep-trials 24] [--steps 400]``.
Each way's bare-loop baseline is the median bare time of the same kind of trial. The bare
loop runs with the allocator setting every shiftbench CPU worker uses (freed memory kept:
``accel.retain_memory``, measured on its own by ``perf/allocator.py``), so the figures are
the harness's cost, not the allocator's gain. The bare loop draws its batches as a
hand-written loop does, ``x[idx]``; the runner's sampler draws the same values with
``index_select`` (``Environment.take``, ``perf/sampler.py``). ``--bare-take`` gives the bare
loop that draw too, so the runner's figure is then its overhead without that gain;
``--runner-only`` prints the lock-step figures alone (about 2 min).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ray import tune

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from shiftbench.models.registry import create_model  # noqa: E402
from shiftbench.plugins.registry import dataset_class, defaults, objective_class, solver_class  # noqa: E402
from shiftbench.spec.study import Study, load_study  # noqa: E402
from shiftbench.store import ledger as store  # noqa: E402
from shiftbench.sweep.driver import run_study  # noqa: E402
from shiftbench.trials import allocator  # noqa: E402
from shiftbench.trials import runner as runner_module  # noqa: E402
from shiftbench.trials.accel import AUTO  # noqa: E402
from shiftbench.trials.runner import TrialRunner  # noqa: E402
from shiftbench.trials.trial import Trial  # noqa: E402

# Learning rates at which SGD does not diverge here, so every way does the full training.
LRS = (0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1)


def trials(n: int, steps: int, eval_every: int) -> list[Trial]:
    objective = {**defaults(objective_class()), "steps": steps, "eval_every": eval_every}
    objective.pop("seed")
    dataset = defaults(dataset_class("colored_digits"))
    return [
        Trial.make(
            "colored_digits",
            dataset,
            objective,
            "sgd",
            {**defaults(solver_class("sgd")), "lr": LRS[i % len(LRS)]},
            0,
            i,
        )
        for i in range(n)
    ]


def bare_steps(trial: Trial, take: bool = False) -> Iterator[None]:
    """The same training in plain PyTorch, one step per ``next``: seeded init, on-device
    sampling, SGD, and at each checkpoint the loss and accuracy of every split (what the
    runner records). The data set is loaded before the first ``next``. Batches are drawn
    with advanced indexing, as by hand, or with ``take``, the runner's draw."""
    data = dataset_class("colored_digits").get_instance(**dict(trial.dataset_params)).get_data()
    splits = data["data"].splits("cpu")
    params, hp = dict(trial.objective_params), dict(trial.solver_params)
    yield
    torch.manual_seed(trial.seed)
    model = create_model(
        "cnn",
        data["data"].input_shape,
        2,
        depth=params["depth"],
        width=params["width"],
        dropout=params["dropout"],
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=hp["lr"])
    train = [inn for i, (inn, _) in enumerate(splits) if i != data["data"].test_env]
    generator = torch.Generator().manual_seed(trial.seed)
    for step in range(params["steps"] + 1):
        if step % params["eval_every"] == 0 or step == params["steps"]:
            model.eval()
            with torch.no_grad():  # the loss and accuracy a hand-written loop would record
                for inn, out in splits:
                    for env in (inn, out):
                        logits = model(env.x)
                        F.cross_entropy(logits, env.y).item()
                        (logits.argmax(1) == env.y).float().mean().item()
            model.train()
        if step == params["steps"]:
            return
        idx = [torch.randint(len(env), (hp["batch_size"],), generator=generator) for env in train]
        if take:  # the runner's draw (``index_select``), not advanced indexing
            drawn = [env.take(i) for env, i in zip(train, idx)]
            x, y = torch.cat([d[0] for d in drawn]), torch.cat([d[1] for d in drawn])
        else:
            x = torch.cat([env.x[i] for env, i in zip(train, idx)])
            y = torch.cat([env.y[i] for env, i in zip(train, idx)])
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        yield


class Lockstep(runner_module.Checkpointer):
    """The runner's checkpoint callback, advancing a bare loop by one step at each call and
    timing that step apart: the two trainings alternate step by step, so a change of machine
    speed (on a shared VM, ±20% between back-to-back runs of one trial) hits both alike."""

    bare: Iterator[None]
    bare_seconds = 0.0

    def __call__(self) -> bool:
        start = time.perf_counter()
        next(Lockstep.bare, None)
        Lockstep.bare_seconds += time.perf_counter() - start
        return super().__call__()


def lockstep(runner: TrialRunner, trial: Trial, take: bool = False) -> tuple[float, float]:
    """Seconds of the bare loop and of ``runner.run`` on ``trial``, trained in lock step (the
    runner's figure is its wall time without the bare steps run inside it)."""
    Lockstep.bare, Lockstep.bare_seconds = bare_steps(trial, take), 0.0
    next(Lockstep.bare)  # the bare loop's data loading is not timed, as the runner's is cached
    runner_module.Checkpointer = Lockstep
    try:
        wall = timed(lambda: runner.run(trial, "overhead"))
    finally:
        runner_module.Checkpointer = Lockstep.__base__
    start = time.perf_counter()
    for _ in Lockstep.bare:  # steps past the runner's last callback, if any
        pass
    bare = Lockstep.bare_seconds + time.perf_counter() - start
    return bare, wall - Lockstep.bare_seconds


def bare_pair(trial: Trial, take: bool = False) -> tuple[float, float]:
    """Seconds of two bare loops of ``trial`` in lock step, each step timed apart: how far
    apart the method puts two identical trainings (its calibration)."""
    first, second = bare_steps(trial, take), bare_steps(trial, take)
    seconds = [0.0, 0.0]
    next(first), next(second)
    running = [first, second]
    while running:
        for i, steps in enumerate((first, second)):
            if steps not in running:
                continue
            start = time.perf_counter()
            if next(steps, StopIteration) is StopIteration:
                running.remove(steps)
            seconds[i] += time.perf_counter() - start
    return seconds[0], seconds[1]


def write_study(folder: Path, n: int, steps: int, eval_every: int) -> Path:
    """A grid of ``n`` SGD learning rates (seed 0), the same kind of trial as ``trials``."""
    path = folder / "overhead.yml"
    lrs = [round(float(lr), 6) for lr in np.geomspace(LRS[0], LRS[-1], n)]
    path.write_text(
        "name: overhead\n"
        "datasets: {colored_digits: {test_env: [2]}}\n"
        f"objective: {{steps: {steps}, eval_every: {eval_every}}}\n"
        f"solvers: {{sgd: {{lr: {lrs}}}}}\n"
        "search: {kind: grid}\nseeds: [0]\n"
    )
    return path


@dataclass(frozen=True)
class SweepTime:
    """One sweep's wall seconds, and what the ledger's start and end times say of them."""

    wall: float
    outside: float  # seconds its worker spent outside trials
    start_up: float  # seconds from the run's start to its first trial's start
    gaps: tuple[float, ...]  # seconds between one trial's end and the next one's start


def timed_sweep(study: Study, store_dir: Path) -> SweepTime:
    """Run ``study`` on one worker into ``store_dir`` and read its time outside trials
    from the ledger's start and end times."""
    began = datetime.now(UTC)
    wall = timed(lambda: run_study(study, store_dir, workers=1, progress=False))
    ledger = store.final_rows(store.read(store_dir, study.name))
    spans = ledger.groupby("trial_id").agg(start=("start_time", "min"), end=("end_time", "max"))
    spans = spans.sort_values("start")
    inside = (spans["end"] - spans["start"]).dt.total_seconds().sum()
    gaps = (
        spans["start"].iloc[1:].to_numpy() - spans["end"].iloc[:-1].to_numpy()
    ) / np.timedelta64(1, "s")
    start_up = (spans["start"].iloc[0] - began).total_seconds()
    return SweepTime(wall, wall - inside, start_up, tuple(float(g) for g in gaps))


class TuneTrial(tune.Trainable):
    """A Ray Tune class trainable: the sweep's training of ``config["trial"]``. A reused
    actor keeps its runner, and the runner its loaded data."""

    def setup(self, config: dict) -> None:
        torch.set_num_threads(1)
        self.runner, self.trial = TrialRunner({}), config["trial"]

    def step(self) -> dict:
        outcome = self.runner.run(self.trial, "overhead")
        return {"train_loss": outcome.rows[-1]["train_loss"], "done": True}

    def reset_config(self, new_config: dict) -> bool:
        self.trial = new_config["trial"]
        return True

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        """Tune saves a finished trial; its results are in the reported metrics."""
        return {}

    def load_checkpoint(self, checkpoint: dict) -> None:
        """Nothing to restore: a trial is one step."""


def tune_seconds(todo: list[Trial], folder: Path, reuse_actors: bool) -> float:
    """Wall seconds per trial of a Ray Tune ``Tuner`` over ``todo``, one trial at a time."""
    tuner = tune.Tuner(
        TuneTrial,
        param_space={"trial": tune.grid_search(todo)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse_actors),
        run_config=tune.RunConfig(storage_path=str(folder), verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"Ray Tune trials failed: {results.errors[0]}")
    return (time.perf_counter() - start) / len(todo)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument(
        "--sweep-trials",
        type=int,
        default=24,
        help="trials in each Ray sweep (its fixed costs amortize over them)",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds of lock-step runs (median paired difference)"
    )
    parser.add_argument("--skip-benchopt", action="store_true")
    parser.add_argument(
        "--bare-take",
        action="store_true",
        help="the bare loop draws with index_select as the runner does (perf/sampler.py), "
        "not with advanced indexing: the runner's overhead without its faster draw",
    )
    parser.add_argument(
        "--runner-only", action="store_true", help="the lock-step figures only (no sweeps)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    # the bare loop trains with the allocator setting of a CPU worker (``accel.retain_memory:
    # auto``, set by the runner), so the ratios compare the harness, not the allocator
    allocator.retain(AUTO.resolve(torch.device("cpu")).retain_memory is True)
    n = min(args.trials, len(LRS))
    todo = trials(n, args.steps, args.eval_every)
    runner = TrialRunner({})
    # warm-up: first-trial costs (data, allocator) out of the figures
    lockstep(runner, todo[0], args.bare_take)
    bare_times, differences = [], []
    for _ in range(args.rounds):
        for trial in todo:
            b, h = lockstep(runner, trial, args.bare_take)
            bare_times.append(b)
            differences.append(h - b)
    # the runner's overhead: the median of paired differences (same trial, in lock step)
    bare = float(np.median(bare_times))
    harness = bare + float(np.median(differences))
    calibration = [b - a for a, b in (bare_pair(t, args.bare_take) for t in todo)]
    lock = (
        f"lock step: the runner's paired difference {100 * np.median(differences) / bare:+.2f}%"
        f" (median of {len(differences)}); two bare loops "
        f"{100 * np.median(calibration) / bare:+.2f}% (median of {len(calibration)}); "
        f"bare loop draws with {'index_select' if args.bare_take else 'advanced indexing'}"
    )
    if args.runner_only:
        print(lock)
        return
    with tempfile.TemporaryDirectory() as tmp:
        m = args.sweep_trials
        study = load_study(write_study(Path(tmp), m, args.steps, args.eval_every))
        cold = timed_sweep(study, Path(tmp) / "cold").wall / m
        warm = timed_sweep(study, Path(tmp) / "warm")
        # the sweep's own cost, independent of how fast this machine trains right now: its
        # wall time minus the time its worker spent inside trials (each row's start to end
        # time), per trial, on a study twice as long; plus the runner's measured overhead
        double = timed_sweep(
            load_study(write_study(Path(tmp), 2 * m, args.steps, args.eval_every)),
            Path(tmp) / "double",
        )
        dispatch = double.outside / (2 * m)
        # per extra trial, each run's start-up (paid once) left out
        steady = ((double.outside - double.start_up) - (warm.outside - warm.start_up)) / m
        gap = float(np.mean(double.gaps))
        tune_default = tune_seconds(study.trials(), Path(tmp) / "tune", reuse_actors=False)
        tune_reuse = tune_seconds(study.trials(), Path(tmp) / "tune_reuse", reuse_actors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_trial = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); import torch; "
        "torch.set_num_threads(1); from perf.overhead import trials; "
        "from shiftbench.trials.runner import TrialRunner; "
        f"TrialRunner({{}}).run(trials({n}, {args.steps}, {args.eval_every})[INDEX], 'overhead')"
    )
    per_process = (
        timed(
            lambda: [
                subprocess.run(
                    [sys.executable, "-c", one_trial.replace("INDEX", str(i))],
                    check=True,
                    env=env,
                    cwd=ROOT,
                )
                for i in range(n)
            ]
        )
        / n
    )
    rows = [
        ("bare PyTorch loop", bare),
        ("shiftbench runner (in-process)", harness),
        ("shiftbench sweep (Ray start + 1 worker)", cold),
        ("shiftbench sweep (Ray running, 1 worker)", warm.wall / m),
        ("sweep, long study (runner+dispatch)", harness + dispatch),
        ("sweep, steady state (per extra trial)", harness + steady),
        ("Ray Tune Tuner (default settings)", tune_default),
        ("Ray Tune Tuner (reuse_actors=True)", tune_reuse),
        ("one process per trial (DomainBed)", per_process),
    ]
    if not args.skip_benchopt:
        lrs = ",".join(str(lr) for lr in LRS[:n])
        cmd = [
            str(Path(sys.executable).parent / "benchopt"),
            "run",
            str(ROOT),
            "-d",
            "colored_digits",
            "-s",
            f"sgd[lr=[{lrs}]]",
            "-o",
            f"shiftbench[steps={args.steps},eval_every={args.eval_every}]",
            "--no-plot",
            "--no-cache",  # else a second run of the script reads its results from the cache
            "-r",
            "1",
        ]
        benchopt = (
            timed(
                lambda: subprocess.run(
                    cmd, check=True, env=env, cwd=tempfile.gettempdir(), capture_output=True
                )
            )
            / n
        )
        rows.append(("benchopt run", benchopt))
    print(
        f"sweep start-up {double.start_up:.2f} s and {warm.start_up:.2f} s per run; "
        f"worker gap between trials {1000 * gap:.1f} ms"
    )
    print(lock)
    print(f"{n} trials of {args.steps} steps (digits CNN, SGD), seconds per trial:")
    print(f"{'way':<36}{'s/trial':>9}{'overhead s':>12}{'overhead %':>12}")
    for name, seconds in rows:
        over = seconds - bare
        print(f"{name:<36}{seconds:>9.3f}{over:>12.3f}{100 * over / bare:>11.1f}%")
    # against the steady state, not the Ray-running row: that one is wall time minutes apart.
    # Ratios of times, not of overheads: an overhead near zero makes the latter meaningless.
    sweep = harness + steady
    for name, seconds in rows[6:]:
        print(
            f"{name}: {seconds / sweep:.2f}x the sweep's time per trial "
            f"({seconds - bare:+.3f} s of overhead per trial against its {sweep - bare:+.3f} s)"
        )
    spread = abs(float(np.median(calibration))) / bare
    for name, seconds in (rows[1], rows[5]):
        if abs(seconds - bare) / bare <= spread:
            print(
                f"{name}: within the lock step's resolution (two bare loops differ by "
                f"{100 * spread:.2f}%): read it as 0 +- that"
            )


if __name__ == "__main__":
    main()
