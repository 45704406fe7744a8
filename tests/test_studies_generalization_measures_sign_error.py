"""Tests for shiftbench.studies.generalization_measures.sign_error: the robust sign error, against
an independent computation or a property."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from studies_generalization_measures_grid import HPARAMS, grid

from shiftbench.studies.generalization_measures import sign_error


def test_hoeffding_weight_hand_computed() -> None:
    # n = 2000, delta = 0.05: exp(-n delta^2 / 2) = exp(-2.5) = 0.0820850;
    # p = (1 - 0.1641700)^2 = 0.6986118; weight = p - 0.5.
    assert float(sign_error.hoeffding_weight(0.05, 2000)) == pytest.approx(0.1986118, abs=1e-6)
    assert float(sign_error.hoeffding_weight(-0.05, 2000)) == pytest.approx(0.1986118, abs=1e-6)
    # n = 1000: p = (1 - 2 exp(-1.25))^2 = 0.18 < 0.5, filtered out entirely.
    assert float(sign_error.hoeffding_weight(0.05, 1000)) == 0.0
    assert float(sign_error.hoeffding_weight(0.05, 1000, min_weight=0.0)) == pytest.approx(
        (1 - 2 * math.exp(-1.25)) ** 2
    )


def test_sign_error_zero_for_target_and_one_for_negation() -> None:
    df = grid(seeds=4)
    df["neg"] = -df["gap"]
    same = sign_error.robust_sign_error(df, "gap", "gap", HPARAMS, n_test=10_000)
    assert (same.mean, same.p90, same.max) == (0.0, 0.0, 0.0)
    neg = sign_error.robust_sign_error(df, "neg", "gap", HPARAMS, n_test=10_000)
    assert neg.mean == pytest.approx(1.0)
    x, f = sign_error.sign_error_cdf(neg)
    assert np.all(x == 1.0) and f[-1] == 1.0


def test_sign_error_environments_enumerate_one_hparam_changes() -> None:
    df = grid(seeds=4)
    envs = sign_error.robust_sign_error(df, "noise", "gap", HPARAMS, n_test=10_000).environments
    # Unordered value pairs of the changed hparam times the combinations of the other two.
    assert envs.groupby("hparam").size().to_dict() == {"lr": 3 * 6, "depth": 3 * 6, "wd": 1 * 9}
    assert (envs["n_pairs"] == 16).all()
    seeded = sign_error.robust_sign_error(df, "noise", "gap", HPARAMS, 10_000, match=["seed"])
    assert (seeded.environments["n_pairs"] == 4).all()


def test_sign_error_weighted_environment_by_hand() -> None:
    # One environment (lr 0.1 -> 1.0), two seeds each, all four cross pairs.
    df = pd.DataFrame(
        {
            "lr": [0.1, 0.1, 1.0, 1.0],
            "gap": [0.10, 0.20, 0.30, 0.15],
            "m": [1.0, 2.0, 3.0, 0.0],
        }
    )
    n = 2000
    pairs = [(0, 2), (0, 3), (1, 2), (1, 3)]
    w = [float(sign_error.hoeffding_weight(df.gap[a] - df.gap[b], n)) for a, b in pairs]
    # m orders (0,2), (0,3) wrongly? (0,2): dm<0, dg<0 ok; (0,3): dm>0, dg<0 wrong;
    # (1,2): dm<0, dg<0 ok; (1,3): dm>0, dg>0 ok.
    err = [0.0, 1.0, 0.0, 0.0]
    result = sign_error.robust_sign_error(df, "m", "gap", ["lr"], n_test=n, min_ess=1)
    env = result.environments.iloc[0]
    assert env["weight"] == pytest.approx(sum(w))
    assert env["ess"] == pytest.approx(sum(w) ** 2 / sum(v * v for v in w))
    assert env["sign_error"] == pytest.approx(sum(a * b for a, b in zip(w, err)) / sum(w))
    assert result.mean == pytest.approx(env["sign_error"])


def test_sign_error_ess_filter_drops_small_environments() -> None:
    df = grid(seeds=4)
    # Gaps 0.01 apart and a huge test set: every pair weighs exactly 1/2, so ess = n_pairs.
    df["gap"] = np.random.default_rng(2).permutation(len(df)) * 0.01
    small = df[(df["depth"] != 8) | (df["seed"] == 0)]
    result = sign_error.robust_sign_error(small, "noise", "gap", HPARAMS, n_test=10**7, min_ess=12)
    envs = result.environments
    assert (envs["ess"] == envs["n_pairs"]).all()
    involves_depth8 = (envs["depth"] == 8) | (
        (envs["hparam"] == "depth") & ((envs["value_a"] == 8) | (envs["value_b"] == 8))
    )
    assert not envs.loc[involves_depth8, "kept"].any()
    assert envs.loc[~involves_depth8, "kept"].all()
    assert (envs.loc[involves_depth8, "ess"] < 12).all()
    at_boundary = sign_error.robust_sign_error(small, "noise", "gap", HPARAMS, 10**7, min_ess=16)
    assert (at_boundary.environments["kept"] == envs["kept"]).all()
    above = sign_error.robust_sign_error(small, "noise", "gap", HPARAMS, 10**7, min_ess=16.5)
    assert not above.environments["kept"].any() and math.isnan(above.mean)
    kept = envs.loc[envs["kept"], "sign_error"]
    assert result.mean == pytest.approx(kept.mean())
    assert result.max == pytest.approx(kept.max())
    # the reference's figures: np.percentile over both orders of every environment
    assert result.p90 == pytest.approx(np.percentile([*kept, *kept], 90))
    empirical = sign_error.robust_sign_error(
        small, "noise", "gap", HPARAMS, 10**7, min_ess=12, quantile="empirical"
    )
    assert empirical.p90 == pytest.approx(np.sort(kept)[math.ceil(0.9 * len(kept)) - 1])


def test_sign_error_quantile_reference_and_empirical_by_hand() -> None:
    errors = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # listed twice: 12 values, position 0.9 * 11 = 9.9 between 0.4 and 0.5
    assert sign_error.sign_error_quantile(errors, 0.9) == pytest.approx(0.49)
    # inverted CDF: the ceil(0.9 * 6) = 6th smallest
    assert sign_error.sign_error_quantile(errors, 0.9, "empirical") == pytest.approx(0.5)
    # neither is linear interpolation over the list once (position 4.5: 0.45)
    assert np.quantile(errors, 0.9) == pytest.approx(0.45)


def test_hoeffding_threshold_is_where_the_weight_starts() -> None:
    # 215 test examples (the digits' IID test set): 0.134, as the issue computes by hand
    assert sign_error.hoeffding_threshold(215) == pytest.approx(0.1337, abs=1e-4)
    t = sign_error.hoeffding_threshold(1000)
    assert (
        sign_error.hoeffding_weight(t * 0.999, 1000)
        == 0.0
        < sign_error.hoeffding_weight(t * 1.001, 1000)
    )


def test_sign_error_ties_in_the_measure_count_one_half() -> None:
    df = grid(seeds=4).assign(const=1.0)
    assert sign_error.robust_sign_error(df, "const", "gap", HPARAMS, 10_000).mean == 0.5
