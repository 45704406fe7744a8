"""Tests for shiftbench.studies.generalization_measures.intervals: the bootstrap and jackknife
intervals of the scores, against an independent computation or a property."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from studies_generalization_measures_grid import HPARAMS, grid

from shiftbench.studies.generalization_measures import (
    correlation,
    intervals,
    mutual_information,
    sign_error,
)


def test_bootstrap_interval_by_hand() -> None:
    # two units 0 and 1: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    assert intervals.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert intervals.bootstrap_ci([0.3, 0.3, math.nan]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in intervals.bootstrap_ci([0.3]))
    lo, hi = intervals.bootstrap_ci(np.random.default_rng(0).normal(size=400))
    assert lo < 0 < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.2)


def test_jackknife_interval_by_hand() -> None:
    # one row per seed, values 1..4: leave-one-out means 3, 8/3, 7/3, 2; the jackknife se
    # of a mean is the standard deviation over sqrt(n): 1.291 / 2
    df = pd.DataFrame({"seed": [0, 1, 2, 3], "v": [1.0, 2.0, 3.0, 4.0]})
    lo, hi = intervals.jackknife_ci(df, lambda d: d["v"].mean())
    se = np.std([1, 2, 3, 4], ddof=1) / 2
    assert (lo, hi) == pytest.approx((2.5 - 1.959964 * se, 2.5 + 1.959964 * se))
    assert all(math.isnan(v) for v in intervals.jackknife_ci(df.head(1), lambda d: 0.0))


Z95 = 1.959963984540054


def three_seeds() -> pd.DataFrame:
    """One hyperparameter h (a, b), seeds 0-2. Gaps: a 0.1, 0.2, 0.3; b 0.5, 0.6, 0.7, so every
    (a, b) pair is ordered b > a. Measure: a 1, 2, 3; b 0, 5, 6. The (a, b) pairs of seed
    s agree for seeds 1 and 2 and disagree for seed 0; of the nine coupled (a, b) pairs the
    three with b's seed 0 are reversed."""
    return pd.DataFrame(
        {
            "h": ["a"] * 3 + ["b"] * 3,
            "seed": [0, 1, 2] * 2,
            "g": [0.1, 0.2, 0.3, 0.5, 0.6, 0.7],
            "m": [1.0, 2.0, 3.0, 0.0, 5.0, 6.0],
        }
    )


def test_psi_interval_by_hand() -> None:
    # psi_h averages the seeds' pair taus +1, +1, -1: 1/3. Without seed 0, 1 or 2: 0, 0, 1
    # (mean 1/3), so se^2 = 2/3 ((1/3)^2 + (1/3)^2 + (2/3)^2) = 4/9
    df = three_seeds()

    def psi(d: pd.DataFrame) -> list[float]:
        result = correlation.granulated_kendall(d, "m", "g", ["h"])
        return [result.psi, result.per_hparam["h"]]

    assert psi(df) == pytest.approx([1 / 3, 1 / 3])
    lo, hi = intervals.jackknife_cis(df, psi)
    assert lo == pytest.approx([1 / 3 - Z95 * 2 / 3] * 2)
    assert hi == pytest.approx([1 / 3 + Z95 * 2 / 3] * 2)


def test_sign_error_interval_by_hand() -> None:
    # 9 pairs of equal weight 1/2 (gaps >= 0.2 apart, 10^7 test examples), the three with
    # b's seed 0 reversed: 1/3. A draw with c_s copies of seed s weighs pair (a_s, b_t) by
    # c_s c_t, so its error is c_0 sum_s c_s / (sum_s c_s)^2 = c_0 / 3, with c_0 ~
    # Binomial(3, 1/3): P(c_0 = 3) = 1/27 < 5%, P(c_0 = 0) = 8/27 > 5%, so the 90% interval
    # is (0, 2/3). With one environment the p90 is its error.
    def result(**kwargs):
        return sign_error.robust_sign_error(
            three_seeds(), "m", "g", ["h"], 10**7, min_ess=1, **kwargs
        )

    found = result(unit="seed", confidence=0.9)
    assert found.environments["ess"].tolist() == pytest.approx([9.0])
    assert found.mean == found.p90 == pytest.approx(1 / 3)
    assert found.mean_ci == found.p90_ci == pytest.approx((0.0, 2 / 3))
    # at 95% the upper end is c_0 = 3 (P(c_0 <= 2) = 26/27 < 97.5%): the whole range
    assert result(unit="seed").mean_ci == pytest.approx((0.0, 1.0))
    # coupled by seed, the pairs (a_s, b_s) once per copy: c_0 / 3 again
    assert result(unit="seed", confidence=0.9, match=["seed"]).mean_ci == pytest.approx(
        (0.0, 2 / 3)
    )
    assert all(math.isnan(v) for v in (*result().mean_ci, *result().p90_ci))


def test_cmi_interval_is_the_jackknife_of_leave_one_seed_out_k() -> None:
    df = grid(seeds=4).assign(m=lambda d: d["gap"] + 0.02 * d["noise"])

    def k(d: pd.DataFrame) -> float:
        return mutual_information.conditional_mi(d, "m", "gap", HPARAMS).k

    loo = np.array([k(df[df["seed"] != s]) for s in range(4)])
    se = math.sqrt(3 / 4 * float(np.sum((loo - loo.mean()) ** 2)))
    lo, hi = intervals.jackknife_ci(df, k)
    assert (lo, hi) == pytest.approx((k(df) - Z95 * se, k(df) + Z95 * se))
    assert lo < k(df) < hi


def test_intervals_contain_the_estimate_and_shrink_with_more_seeds() -> None:
    def widths(seeds: int) -> list[float]:
        df = grid(seeds=seeds, rng_seed=1).assign(m=lambda d: d["gap"] + 0.03 * d["noise"])
        sign = sign_error.robust_sign_error(df, "m", "gap", HPARAMS, 10**7, min_ess=1, unit="seed")
        psi = correlation.granulated_kendall(df, "m", "gap", HPARAMS).psi
        k = mutual_information.conditional_mi(df, "m", "gap", HPARAMS).k
        cases = [
            (sign.mean, sign.mean_ci),
            (sign.p90, sign.p90_ci),
            (
                psi,
                intervals.jackknife_ci(
                    df, lambda d: correlation.granulated_kendall(d, "m", "gap", HPARAMS).psi
                ),
            ),
            (
                k,
                intervals.jackknife_ci(
                    df, lambda d: mutual_information.conditional_mi(d, "m", "gap", HPARAMS).k
                ),
            ),
        ]
        for estimate, (lo, hi) in cases:
            assert lo <= estimate <= hi
        return [hi - lo for _, (lo, hi) in cases]

    few, many = widths(3), widths(24)
    assert all(m < f for m, f in zip(many, few)), (few, many)
