"""The training loop's draw: ``Environment.take`` (``index_select``) against advanced indexing.

Every training step draws ``batch_size`` examples from each training environment. A bare
loop indexes ``x[idx], y[idx]``; the sampler takes them with ``index_select`` on contiguous
tensors (``Environment.take``), the same values without advanced indexing's argument
parsing and restriding. Times both on the quickstart data's environments (``colored_digits``,
one CPU thread), interleaved over ``--repeat`` rounds of ``--number`` draws, and prints the
median microseconds per draw of one environment and of a whole sampler step, the ratio, and
whether every draw is equal. Run: ``.venv/bin/python perf/sampler.py [--batch-size 64]``.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shiftbench.plugins.registry import dataset_class, defaults
from shiftbench.training.primitives import EnvSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plugin = dataset_class("colored_digits")
    data = plugin.get_instance(**defaults(plugin)).get_data()["data"]
    train = [inn for i, (inn, _) in enumerate(data.splits("cpu")) if i != data.test_env]
    env = train[0]
    idx = torch.randint(len(env), (args.batch_size,), generator=torch.Generator().manual_seed(0))
    sampler = EnvSampler(train, args.batch_size, seed=0)

    def indexed_step() -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The sampler's step as a bare loop writes it: the same draws, advanced indexing."""
        out = []
        for e in train:
            i = torch.randint(len(e), (args.batch_size,), generator=sampler.generator)
            out.append((e.x[i], e.y[i]))
        return out

    ways = {
        "one environment: x[idx], y[idx]": lambda: (env.x[idx], env.y[idx]),
        "one environment: Environment.take": lambda: env.take(idx),
        "sampler step: advanced indexing": indexed_step,
        "sampler step: EnvSampler (take)": lambda: next(sampler),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.repeat):
        for name, fn in ways.items():
            seconds[name].append(timeit.timeit(fn, number=args.number) / args.number)
    per = {name: float(np.median(s)) * 1e6 for name, s in seconds.items()}
    sampler.generator.manual_seed(5)
    indexed = indexed_step()
    sampler.generator.manual_seed(5)
    taken = next(sampler)
    equal = all(
        torch.equal(a, b) for pa, pb in zip(indexed, taken, strict=True) for a, b in zip(pa, pb)
    )
    equal &= all(torch.equal(a, b) for a, b in zip((env.x[idx], env.y[idx]), env.take(idx)))
    names = list(per)
    rows = [
        [names[0], f"{per[names[0]]:.2f}", ""],
        [names[1], f"{per[names[1]]:.2f}", f"{per[names[0]] / per[names[1]]:.2f}x"],
        [names[2], f"{per[names[2]]:.2f}", ""],
        [names[3], f"{per[names[3]]:.2f}", f"{per[names[2]] / per[names[3]]:.2f}x"],
    ]
    print(f"{len(train)} training environments, batch size {args.batch_size}, one CPU thread")
    print(tabulate(rows, headers=["draw", "µs", "speed-up"]))
    print(f"every draw equal: {equal}")


if __name__ == "__main__":
    main()
