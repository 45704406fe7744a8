"""GPU training throughput: shiftbench's training path vs a hand-tuned loop (images/s).

The training path is a solver plugin's ``run`` loop as the runner drives it (on-device
``EnvSampler`` draws, ERM loss, ``torch.optim`` step), in three settings of the study's
``accel:`` key: the plain fp32 eager loop, ``auto`` (bf16 autocast and channels-last on a
GPU) and ``auto`` with ``compile: true``. The reference is a hand-written loop on the same
draws with bf16 autocast, channels-last memory format and ``torch.compile``. Models:
DomainBed's ``mnist_cnn`` on 2x28x28 inputs and timm's ``resnet18`` on CIFAR-sized
3x32x32 inputs; target ratio (compiled path / reference) >= 90%.

    .venv/bin/python perf/gpu.py [--steps 200] [--warmup 30]

Exits with a message (status 0) when there is no CUDA GPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from shiftbench.data.environments import Environment
from shiftbench.models.registry import create_model
from shiftbench.plugins import registry
from shiftbench.training.algorithms import ERM
from shiftbench.training.primitives import EnvSampler
from shiftbench.trials.accel import PLAIN, Accel

CASES = {"mnist_cnn": ((2, 28, 28), 10, 64), "resnet18": ((3, 32, 32), 10, 128)}
ENVS = 2
EXAMPLES_PER_ENV = 4096


def environments(shape: tuple[int, ...], classes: int, device: str) -> list[Environment]:
    """Random on-device training environments of the given input shape."""
    gen = torch.Generator().manual_seed(0)
    return [
        Environment(
            f"env{i}",
            torch.randn(EXAMPLES_PER_ENV, *shape, generator=gen),
            torch.randint(classes, (EXAMPLES_PER_ENV,), generator=gen),
        ).to(device)
        for i in range(ENVS)
    ]


def timed(run: Callable[[int], None], steps: int, warmup: int, images: int, device: str) -> float:
    """Images per second of ``run(steps)`` after ``run(warmup)``."""
    run(warmup)
    if device == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    run(steps)
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * images / (time.perf_counter() - started)


def solver_path(
    name: str,
    envs: list[Environment],
    batch: int,
    device: str,
    args: argparse.Namespace,
    accel: Accel,
) -> float:
    """The solver plugin's own loop (momentum SGD), as ``TrialRunner`` runs it with the
    study's ``accel`` settings resolved for the device."""
    shape, classes, _ = CASES[name]
    model = create_model(name, shape, classes).to(device)
    solver = registry.solver_class("momentum").get_instance(batch_size=batch)
    solver.accel = accel.resolve(torch.device(device))
    solver.set_objective(model, envs, ERM(), 10**9, 0, "same")

    def run(steps: int) -> None:
        left = iter(range(steps, -1, -1))
        solver.run(lambda: next(left) > 0)

    return timed(run, args.steps, args.warmup, batch * ENVS, device)


def tuned_path(
    name: str, envs: list[Environment], batch: int, device: str, args: argparse.Namespace
) -> float:
    """bf16 autocast, channels-last and ``torch.compile`` on the same minibatch draws."""
    shape, classes, _ = CASES[name]
    model = create_model(name, shape, classes).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = EnvSampler(envs, batch, 0)

    @torch.compile
    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16):
            return F.cross_entropy(model(x), y)

    def run(steps: int) -> None:
        for _ in range(steps):
            batches = next(sampler)
            x = torch.cat([xb for xb, _ in batches]).contiguous(memory_format=torch.channels_last)
            loss = loss_of(x, torch.cat([yb for _, yb in batches]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return timed(run, args.steps, args.warmup, batch * ENVS, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--device", default="cuda", help="cuda (cpu only to smoke-test)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("perf/gpu.py measures GPU throughput and there is no CUDA GPU here: skipped.")
        sys.exit(0)
    torch.backends.cudnn.benchmark = True
    name_of_device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"{name_of_device}; batch = per-environment batch x {ENVS} environments")
    settings = {
        "fp32": PLAIN,
        "auto": Accel(),
        "auto+compile": Accel(compile=True),
    }
    header = "".join(f"{k + ' img/s':>19}" for k in settings)
    print(f"{'model':>10} {'batch':>6}{header}{'tuned img/s':>13} {'ratio':>6}")
    for name, (shape, classes, batch) in CASES.items():
        envs = environments(shape, classes, args.device)
        ours = {
            k: solver_path(name, envs, batch, args.device, args, a) for k, a in settings.items()
        }
        tuned = tuned_path(name, envs, batch, args.device, args)
        cells = "".join(f"{v:>19.0f}" for v in ours.values())
        ratio = ours["auto+compile"] / tuned
        print(f"{name:>10} {batch * ENVS:>6}{cells}{tuned:>13.0f} {ratio:>6.1%}")


if __name__ == "__main__":
    main()
