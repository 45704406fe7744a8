"""The full-factorial grid of models that the tests of Study 2's scores
(tests/test_studies_generalization_measures_*.py) score measures on."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

HPARAMS = ["lr", "depth", "wd"]


def grid(seeds: int = 1, rng_seed: int = 0) -> pd.DataFrame:
    """A 3 x 3 x 2 full-factorial grid with a gap driven by lr and depth, plus noise columns."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for lr, depth, wd, seed in itertools.product(
        [0.01, 0.1, 1.0], [2, 4, 8], [0.0, 1e-4], range(seeds)
    ):
        gap = 0.1 * math.log10(lr) + 0.02 * depth + 0.01 * rng.normal()
        rows.append(
            {"lr": lr, "depth": depth, "wd": wd, "seed": seed, "gap": gap, "noise": rng.normal()}
        )
    return pd.DataFrame(rows)
