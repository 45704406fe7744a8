"""Tests for shiftbench.studies.generalization_measures.correlation: Kendall tau, tau-b and the
granulated Kendall Psi, against an independent computation or a property."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats
from studies_generalization_measures_grid import HPARAMS, grid

from shiftbench.studies.generalization_measures import correlation


def brute_tau_b(x: list[float], y: list[float]) -> float:
    """Kendall tau-b by counting every pair: (C - D) / sqrt((n0 - n1) (n0 - n2))."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        ties_x += dx == 0
        ties_y += dy == 0
        if dx * dy > 0:
            concordant += 1
        elif dx * dy < 0:
            discordant += 1
    n0 = len(x) * (len(x) - 1) / 2
    return (concordant - discordant) / math.sqrt((n0 - ties_x) * (n0 - ties_y))


def brute_tau_jiang(x: list[float], y: list[float]) -> float:
    """Jiang et al.'s Eq. 2 by counting every ordered pair: sum sign sign / (n (n - 1))."""
    total = sum(
        np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        for i, j in itertools.permutations(range(len(x)), 2)
    )
    return total / (len(x) * (len(x) - 1))


# Kendall tau


@pytest.mark.parametrize("small_sample", [0, 256])
def test_kendall_tau_is_jiangs_and_tau_b_matches_scipy_with_ties(
    small_sample: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(correlation, "SMALL_SAMPLE", small_sample)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"m": rng.integers(0, 4, 40), "g": rng.integers(0, 5, 40)})
    expected = scipy_stats.kendalltau(df["m"], df["g"], variant="b").statistic
    assert correlation.kendall_tau_b(df, "m", "g") == pytest.approx(expected)
    assert correlation.kendall_tau_b(df, "m", "g") == pytest.approx(
        brute_tau_b(df["m"].tolist(), df["g"].tolist())
    )
    assert correlation.kendall_tau(df, "m", "g") == pytest.approx(
        brute_tau_jiang(df["m"].tolist(), df["g"].tolist())
    )


def test_jiangs_tau_keeps_ties_in_the_denominator_by_hand() -> None:
    # 6 pairs: the one tied in m counts 0, the other 5 are concordant
    df = pd.DataFrame({"m": [1.0, 1.0, 2.0, 3.0], "g": [0.1, 0.2, 0.3, 0.4]})
    assert correlation.kendall_tau(df, "m", "g") == pytest.approx(5 / 6)
    assert correlation.kendall_tau_b(df, "m", "g") == pytest.approx(5 / math.sqrt(5 * 6))


def test_kendall_tau_drops_nan_rows_and_scores_constant_measure_zero() -> None:
    df = pd.DataFrame({"m": [1.0, np.nan, 3.0, 2.0], "g": [0.1, 0.5, 0.3, np.nan], "c": 1.0})
    assert correlation.kendall_tau(df, "m", "g") == pytest.approx(1.0)
    assert correlation.kendall_tau(df, "c", "g") == 0.0


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-5, 5), st.floats(-10, 10, allow_nan=False)),
        min_size=3,
        max_size=20,
    )
)
def test_kendall_tau_invariant_to_monotone_transform(pairs: list[tuple[int, float]]) -> None:
    df = pd.DataFrame(pairs, columns=["m", "g"]).astype(float)
    df["m_mono"] = np.exp(df["m"]) + df["m"] ** 3
    df["m_neg"] = -df["m"]
    tau = correlation.kendall_tau(df, "m", "g")
    assert correlation.kendall_tau(df, "m_mono", "g") == pytest.approx(tau, nan_ok=True)
    assert correlation.kendall_tau(df, "m_neg", "g") == pytest.approx(-tau, nan_ok=True)


# Granulated Kendall Psi


def test_granulated_kendall_matches_explicit_loop() -> None:
    df = grid(seeds=2)
    df["m"] = df["gap"] + 0.03 * df["noise"]
    values = {h: sorted(df[h].unique()) for h in [*HPARAMS, "seed"]}
    expected = {}
    for h in HPARAMS:
        others = [o for o in [*HPARAMS, "seed"] if o != h]
        taus = []
        for combo in itertools.product(*(values[o] for o in others)):
            mask = np.ones(len(df), dtype=bool)
            for o, v in zip(others, combo):
                mask &= (df[o] == v).to_numpy()
            group = df[mask]
            taus.append(brute_tau_jiang(group["m"].tolist(), group["gap"].tolist()))
        expected[h] = sum(taus) / len(taus)
    result = correlation.granulated_kendall(df, "m", "gap", HPARAMS)
    assert result.per_hparam == pytest.approx(expected)
    assert result.psi == pytest.approx(sum(expected.values()) / 3)


def test_granulated_kendall_on_a_hand_built_grid() -> None:
    # a, b in {0, 1}, seeds 0 and 1; psi_a compares the two models of each (b, seed) group
    rows = [  # a, b, seed, measure, gap
        (0, 0, 0, 1, 0.10), (1, 0, 0, 2, 0.20),  # concordant: +1
        (0, 0, 1, 3, 0.15), (1, 0, 1, 0, 0.30),  # discordant: -1
        (0, 1, 0, 2, 0.40), (1, 1, 0, 1, 0.50),  # discordant: -1
        (0, 1, 1, 2, 0.60), (1, 1, 1, 3, 0.50),  # discordant: -1
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["a", "b", "seed", "m", "gap"])
    result = correlation.granulated_kendall(df, "m", "gap", ["a", "b"])
    # psi_a = (1 - 1 - 1 - 1) / 4; psi_b over the (a, seed) groups:
    # (a0 s0) 1 -> 2 vs 0.1 -> 0.4: +1; (a1 s0) 2 -> 1 vs 0.2 -> 0.5: -1;
    # (a0 s1) 3 -> 2 vs 0.15 -> 0.6: -1; (a1 s1) 0 -> 3 vs 0.3 -> 0.5: +1
    assert result.per_hparam == pytest.approx({"a": -0.5, "b": 0.0})
    assert result.psi == pytest.approx(-0.25)
    # pooling the seeds would also count pairs that differ in the seed only
    pooled = correlation.granulated_kendall(df, "m", "gap", ["a", "b"], replicate=None)
    assert pooled.per_hparam["a"] != pytest.approx(-0.5)


def test_granulated_kendall_is_one_for_target_and_minus_one_for_negation() -> None:
    df = grid()
    df["neg"] = -df["gap"]
    same = correlation.granulated_kendall(df, "gap", "gap", HPARAMS)
    assert same.psi == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in same.per_hparam.values())
    assert correlation.granulated_kendall(df, "neg", "gap", HPARAMS).psi == pytest.approx(-1.0)


def test_granulated_kendall_skips_groups_where_the_hparam_does_not_vary() -> None:
    df = grid(seeds=2)
    df["m"] = df["gap"]
    lone = (df["depth"] == 2) & (df["wd"] == 0.0)
    df = df[~lone | (df["lr"] == 0.01)]
    # The lr group left with one lr value would score tau = -1 if it were counted.
    df.loc[lone, "m"] = -df.loc[lone, "gap"]
    assert correlation.granulated_kendall(df, "m", "gap", HPARAMS).per_hparam[
        "lr"
    ] == pytest.approx(1.0)
