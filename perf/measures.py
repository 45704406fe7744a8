"""Cost of the full measure suite relative to training, on the bundled digits.

Trains the built-in small CNN on 80% of scikit-learn's 8x8 digits with a bare PyTorch
loop until the training cross-entropy reaches 0.01 (or a step cap), then times
``shiftbench.measures.core.compute_with_reasons`` on every measure, with each family's share
(work shared through the context's caches counts for the first measure that needs it).
Run: ``python perf/measures.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F

from shiftbench.data.digits import digit_images
from shiftbench.measures import core as measures
from shiftbench.models.registry import create_model

TARGET_CE = 0.01
MAX_STEPS = 1500
BATCH = 128
RECORD_EVERY = 20


def split() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """80/20 train / held-out split of the digits as (N, 1, 8, 8) images."""
    images, labels = digit_images()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    x, y = images[order].unsqueeze(1), labels[order]
    cut = int(0.8 * len(y))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, float]]:
    """Adam on minibatches until the full training cross-entropy is <= TARGET_CE."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    history: list[tuple[int, float]] = []
    for step in range(MAX_STEPS + 1):
        if step % RECORD_EVERY == 0:
            with torch.no_grad():
                loss = float(F.cross_entropy(model(x), y))
            history.append((step, loss))
            if loss <= TARGET_CE:
                break
        batch = torch.randint(len(y), (BATCH,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    return history


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    (x, y), heldout = split()
    model = create_model("cnn", (1, 8, 8), 10, depth=2, width=32)
    init = copy.deepcopy(model)
    start = time.perf_counter()
    history = train(model, x, y)
    train_s = time.perf_counter() - start
    print(f"training: {history[-1][0]} steps to CE {history[-1][1]:.4f} in {train_s:.1f} s")

    timings: dict[str, float] = {}
    start = time.perf_counter()
    values, reasons = measures.compute_with_reasons(
        model, (x, y), init, history=history, heldout_data=heldout, timings=timings
    )
    suite_s = time.perf_counter() - start
    for family, names in measures.families().items():
        seconds = sum(timings[name] for name in names)
        print(f"  {family:16s} {len(names):3d} measures {seconds:7.2f} s")
    print(f"full suite: {len(values)} measures in {suite_s:.1f} s; undefined: {reasons or 'none'}")
    print(f"ratio suite / training: {suite_s / train_s:.2f}")


if __name__ == "__main__":
    main()
