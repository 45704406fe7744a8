"""CIFAR-10-C (Hendrycks & Dietterich 2019): train on clean CIFAR-10, test on one corruption.

Environment 0 is the clean training set; environment 1 is the CIFAR-10 test
set under ``corruption`` at ``severity`` (1-5), read from the released
``CIFAR-10-C/<corruption>.npy`` when present, else computed on the fly.

``shifts`` (``"<corruption>-<severity>,..."``) instead makes every listed corruption its own
test environment (1, 2, ...) of one trial, trained on environment 0 only, so one model is
evaluated under every shift (the measures study's OOD targets, ``env<i>_acc``).
``train_size`` > 0 trains on a seeded subset of that many clean images (the training-set-size
axis of the measures study). ``measure_fraction`` > 0 sets that part of the clean training
images aside for the ``*_heldout`` measures, disjoint from the training and IID test parts.
"""

import numpy as np
from benchopt import BaseDataset

from shiftbench.data.cifar import (
    CIFAR_C_CORRUPTIONS,
    check_cifar10_c,
    cifar10_c_environments,
    corrupted_test_set,
)
from shiftbench.data.environments import DomainData, Environment


class Dataset(BaseDataset):
    name = "cifar10_c"
    parameters = {
        "corruption": ["gaussian_noise"],
        "severity": [5],
        "test_env": [1],
        "holdout_fraction": [0.2],
        "split_seed": [0],
        "data_home": [None],
        "shifts": [""],
        "train_size": [0],
        "measure_fraction": [0.0],
    }
    environments = ("clean", "corrupted")

    def check_data(self) -> None:
        """Raise one line naming the missing path (run before any trial starts)."""
        shifts = parse_shifts(self.shifts) if self.shifts else [(self.corruption, self.severity)]
        check_cifar10_c(self.data_home, [corruption for corruption, _ in shifts])

    def get_data(self) -> dict:
        if not self.shifts:
            envs = cifar10_c_environments(self.data_home, [self.corruption], [self.severity])
        else:
            envs = cifar10_c_environments(self.data_home, [], [])
            for corruption, severity in parse_shifts(self.shifts):
                x, y = corrupted_test_set(self.data_home, corruption, severity)
                envs.append(Environment(f"{corruption}-{severity}", x, y))
        if self.train_size:
            if not 0 < self.train_size <= len(envs[0]):
                raise ValueError(f"train_size must be in 1..{len(envs[0])}, got {self.train_size}")
            keep = np.random.RandomState(self.split_seed).permutation(len(envs[0]))
            envs[0] = envs[0].subset(np.sort(keep[: self.train_size]))
        data = DomainData(
            self.name,
            envs,
            self.test_env,
            10,
            self.holdout_fraction,
            self.split_seed,
            train_envs=(0,) if self.shifts else None,
            measure_fraction=self.measure_fraction,
        )
        return {"data": data}


def parse_shifts(spec: str) -> list[tuple[str, int]]:
    """``"gaussian_noise-5,fog-3"`` -> [("gaussian_noise", 5), ("fog", 3)]."""
    pairs = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        corruption, _, severity = item.rpartition("-")
        if corruption not in CIFAR_C_CORRUPTIONS or severity not in {"1", "2", "3", "4", "5"}:
            raise ValueError(
                f"shift {item!r}: expected <corruption>-<1..5> with a CIFAR-10-C corruption "
                f"({', '.join(CIFAR_C_CORRUPTIONS)})"
            )
        pairs.append((corruption, int(severity)))
    return pairs
