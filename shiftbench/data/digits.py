"""The offline default data: scikit-learn's bundled 8x8 digits under DomainBed's recipes.

ColoredDigits and RotatedDigits are ColoredMNIST and RotatedMNIST with the
1,797 bundled digits in place of MNIST's 70,000, so every study can run on a
laptop with no download.
"""

from __future__ import annotations

from functools import cache

import torch

from shiftbench.data.environments import DomainData, Environment
from shiftbench.data.recipes import colored_environments, rotated_environments

RECIPE_SEED = 0


@cache
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All bundled digits as float images in [0, 1] of shape (N, 8, 8), and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.int64)


@cache
def colored_digit_environments() -> tuple[Environment, ...]:
    """ColoredMNIST's three environments (colour flip 0.1, 0.2, 0.9) on the digits."""
    images, labels = digit_images()
    return tuple(colored_environments(images, labels, seed=RECIPE_SEED))


@cache
def rotated_digit_environments() -> tuple[Environment, ...]:
    """RotatedMNIST's six environments (0, 15, ..., 75 degrees) on the digits."""
    images, labels = digit_images()
    return tuple(rotated_environments(images, labels, seed=RECIPE_SEED))


def domain_data(
    name: str,
    envs: tuple[Environment, ...],
    num_classes: int,
    test_env: int,
    holdout_fraction: float,
    split_seed: int,
) -> DomainData:
    """Wrap recipe environments as the ``DomainData`` a dataset plugin returns."""
    return DomainData(
        name=name,
        environments=list(envs),
        test_env=test_env,
        num_classes=num_classes,
        holdout_fraction=holdout_fraction,
        split_seed=split_seed,
    )
