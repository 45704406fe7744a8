"""The offline default data: scikit-learn's bundled 8x8 digits under DomainBed's recipes.

ColoredDigits and RotatedDigits are ColoredMNIST and RotatedMNIST with the
1,797 bundled digits in place of MNIST's 70,000, so every study can run on a
laptop with no download.
"""

from __future__ import annotations

from functools import cache, lru_cache

import torch

from shiftbench.data.corruptions import CORRUPTIONS, corrupt
from shiftbench.data.environments import DomainData, Environment
from shiftbench.data.recipes import colored_environments, rotate_images, rotated_environments

RECIPE_SEED = 0


@cache
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All bundled digits as float images in [0, 1] of shape (N, 8, 8), and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.int64)


@lru_cache(maxsize=4)
def colored_digit_environments(seed: int = RECIPE_SEED) -> tuple[Environment, ...]:
    """ColoredMNIST's three environments (colour flip 0.1, 0.2, 0.9) on the digits."""
    images, labels = digit_images()
    return tuple(colored_environments(images, labels, seed=seed))


@lru_cache(maxsize=4)
def rotated_digit_environments(seed: int = RECIPE_SEED) -> tuple[Environment, ...]:
    """RotatedMNIST's six environments (0, 15, ..., 75 degrees) on the digits."""
    images, labels = digit_images()
    return tuple(rotated_environments(images, labels, seed=seed))


def domain_data(
    name: str,
    envs: tuple[Environment, ...],
    num_classes: int,
    test_env: int,
    holdout_fraction: float,
    split_seed: int,
    train_envs: tuple[int, ...] | None = None,
    measure_fraction: float = 0.0,
) -> DomainData:
    """Wrap recipe environments as the ``DomainData`` a dataset plugin returns."""
    return DomainData(
        name=name,
        environments=list(envs),
        test_env=test_env,
        num_classes=num_classes,
        holdout_fraction=holdout_fraction,
        split_seed=split_seed,
        train_envs=train_envs,
        measure_fraction=measure_fraction,
    )


SHIFT_SPLIT = 0.6


def parse_shifts(spec: str) -> tuple[tuple[str, int], ...]:
    """``"rotate-30,color,gaussian_noise-3"`` -> ((kind, level), ...); level 0 when absent."""
    shifts = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        kind, _, level = item.partition("-")
        if kind not in ("rotate", "color", *CORRUPTIONS):
            raise ValueError(
                f"unknown shift {kind!r}; one of rotate-<degrees>, color, "
                f"{', '.join(f'{c}-<1..5>' for c in CORRUPTIONS)}"
            )
        if kind in CORRUPTIONS and not (level.isdigit() and 1 <= int(level) <= 5):
            raise ValueError(f"shift {item!r}: corruption severity must be 1..5")
        if kind == "rotate" and not level.lstrip("-").isdigit():
            raise ValueError(f"shift {item!r}: rotation needs an angle in degrees")
        shifts.append((kind, int(level or 0)))
    if not shifts:
        raise ValueError("shifts: name at least one shift")
    return tuple(shifts)


def _apply_shift(x: torch.Tensor, kind: str, level: int) -> torch.Tensor:
    """One shift of RGB digit images ``(N, 3, 8, 8)`` in [0, 1]."""
    if kind == "rotate":
        return rotate_images(x[:, 0], level).expand(-1, 3, -1, -1).clone()
    if kind == "color":
        return x * torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    return corrupt(x, kind, level, seed=RECIPE_SEED)


@cache
def shifted_digit_environments(shifts: str) -> tuple[Environment, ...]:
    """Environment 0: 60% of the digits, clean (grey in RGB), to train on; then one
    environment per shift, each the remaining 40% transformed (rotation by an angle, a red
    tint, or a CIFAR-10-C corruption at a severity), so shifted test images are never seen
    in training and every shift is measured on the same images."""
    images, labels = digit_images()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(RECIPE_SEED))
    n_train = int(len(labels) * SHIFT_SPLIT)
    rgb = images.unsqueeze(1).expand(-1, 3, -1, -1)
    train, test = perm[:n_train], perm[n_train:]
    envs = [Environment("clean", rgb[train].clone(), labels[train])]
    for kind, level in parse_shifts(shifts):
        name = kind if kind == "color" else f"{kind}-{level}"
        envs.append(Environment(name, _apply_shift(rgb[test], kind, level), labels[test]))
    return tuple(envs)
