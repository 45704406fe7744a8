"""Tests for shiftbench.studies.generalization_measures.stats: each score against an
independent computation or a property."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from shiftbench.studies.generalization_measures import stats

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
    monkeypatch.setattr(stats, "SMALL_SAMPLE", small_sample)
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"m": rng.integers(0, 4, 40), "g": rng.integers(0, 5, 40)})
    expected = scipy_stats.kendalltau(df["m"], df["g"], variant="b").statistic
    assert stats.kendall_tau_b(df, "m", "g") == pytest.approx(expected)
    assert stats.kendall_tau_b(df, "m", "g") == pytest.approx(
        brute_tau_b(df["m"].tolist(), df["g"].tolist())
    )
    assert stats.kendall_tau(df, "m", "g") == pytest.approx(
        brute_tau_jiang(df["m"].tolist(), df["g"].tolist())
    )


def test_jiangs_tau_keeps_ties_in_the_denominator_by_hand() -> None:
    # 6 pairs: the one tied in m counts 0, the other 5 are concordant
    df = pd.DataFrame({"m": [1.0, 1.0, 2.0, 3.0], "g": [0.1, 0.2, 0.3, 0.4]})
    assert stats.kendall_tau(df, "m", "g") == pytest.approx(5 / 6)
    assert stats.kendall_tau_b(df, "m", "g") == pytest.approx(5 / math.sqrt(5 * 6))


def test_kendall_tau_drops_nan_rows_and_scores_constant_measure_zero() -> None:
    df = pd.DataFrame({"m": [1.0, np.nan, 3.0, 2.0], "g": [0.1, 0.5, 0.3, np.nan], "c": 1.0})
    assert stats.kendall_tau(df, "m", "g") == pytest.approx(1.0)
    assert stats.kendall_tau(df, "c", "g") == 0.0


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
    tau = stats.kendall_tau(df, "m", "g")
    assert stats.kendall_tau(df, "m_mono", "g") == pytest.approx(tau, nan_ok=True)
    assert stats.kendall_tau(df, "m_neg", "g") == pytest.approx(-tau, nan_ok=True)


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
    result = stats.granulated_kendall(df, "m", "gap", HPARAMS)
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
    result = stats.granulated_kendall(df, "m", "gap", ["a", "b"])
    # psi_a = (1 - 1 - 1 - 1) / 4; psi_b over the (a, seed) groups:
    # (a0 s0) 1 -> 2 vs 0.1 -> 0.4: +1; (a1 s0) 2 -> 1 vs 0.2 -> 0.5: -1;
    # (a0 s1) 3 -> 2 vs 0.15 -> 0.6: -1; (a1 s1) 0 -> 3 vs 0.3 -> 0.5: +1
    assert result.per_hparam == pytest.approx({"a": -0.5, "b": 0.0})
    assert result.psi == pytest.approx(-0.25)
    # pooling the seeds would also count pairs that differ in the seed only
    pooled = stats.granulated_kendall(df, "m", "gap", ["a", "b"], replicate=None)
    assert pooled.per_hparam["a"] != pytest.approx(-0.5)


def test_granulated_kendall_is_one_for_target_and_minus_one_for_negation() -> None:
    df = grid()
    df["neg"] = -df["gap"]
    same = stats.granulated_kendall(df, "gap", "gap", HPARAMS)
    assert same.psi == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in same.per_hparam.values())
    assert stats.granulated_kendall(df, "neg", "gap", HPARAMS).psi == pytest.approx(-1.0)


def test_granulated_kendall_skips_groups_where_the_hparam_does_not_vary() -> None:
    df = grid(seeds=2)
    df["m"] = df["gap"]
    lone = (df["depth"] == 2) & (df["wd"] == 0.0)
    df = df[~lone | (df["lr"] == 0.01)]
    # The lr group left with one lr value would score tau = -1 if it were counted.
    df.loc[lone, "m"] = -df.loc[lone, "gap"]
    assert stats.granulated_kendall(df, "m", "gap", HPARAMS).per_hparam["lr"] == pytest.approx(1.0)


# Conditional mutual information


def brute_normalized_cmi(df: pd.DataFrame, m: str, g: str, cond: list[str]) -> float:
    """I(V_m; V_g | U) / H(V_g | U) from explicit counts over ordered pairs of distinct rows."""
    rows = df.to_dict("records")
    joint: Counter = Counter()
    for a, b in itertools.permutations(rows, 2):
        u = tuple((a[c], b[c]) for c in cond)
        vm = (a[m] > b[m]) - (a[m] < b[m])
        vg = (a[g] > b[g]) - (a[g] < b[g])
        joint[(u, vm, vg)] += 1
    total = sum(joint.values())
    pu, pum, pug = Counter(), Counter(), Counter()
    for (u, vm, vg), c in joint.items():
        pu[u] += c / total
        pum[(u, vm)] += c / total
        pug[(u, vg)] += c / total
    mi = sum(
        c / total * math.log2((c / total) * pu[u] / (pum[(u, vm)] * pug[(u, vg)]))
        for (u, vm, vg), c in joint.items()
    )
    h = -sum(p * math.log2(p / pu[u]) for (u, _), p in pug.items())
    return mi / h


def test_conditional_mi_closed_form_three_models() -> None:
    df = pd.DataFrame({"m": [1.0, 2.0, 3.0], "g": [1.0, 3.0, 2.0]})
    # Ordered pairs: 2 (-,-), 2 (+,+), 1 (-,+), 1 (+,-); both marginals uniform, H(V_g) = 1 bit.
    expected = (2 / 3) * math.log2(4 / 3) + (1 / 3) * math.log2(2 / 3)
    result = stats.conditional_mi(df, "m", "g", [])
    assert result.k == pytest.approx(expected)
    assert result.per_set == {(): pytest.approx(expected)}


def test_conditional_mi_matches_enumeration_per_conditioning_set() -> None:
    df = grid(seeds=2)
    df["m"] = np.round(df["gap"] + 0.05 * df["noise"], 2)
    df["m"] = df["m"].where(df["seed"] == 0, df["m"].round(1))
    result = stats.conditional_mi(df, "m", "gap", HPARAMS)
    assert len(result.per_set) == 1 + 3 + 3
    for s, value in result.per_set.items():
        assert value == pytest.approx(brute_normalized_cmi(df, "m", "gap", list(s))), s
    assert result.k == pytest.approx(min(result.per_set.values()))


def test_conditional_mi_is_one_for_target_and_near_zero_for_random_measure() -> None:
    df = grid(seeds=3)
    df["neg"] = -df["gap"]
    same = stats.conditional_mi(df, "gap", "gap", HPARAMS)
    assert same.k == pytest.approx(1.0)
    # K is blind to the direction of the association.
    assert stats.conditional_mi(df, "neg", "gap", HPARAMS).k == pytest.approx(1.0)
    assert stats.conditional_mi(df, "noise", "gap", HPARAMS).k < 0.02


def test_conditional_mi_is_nan_where_the_set_determines_the_gap() -> None:
    df = grid()
    result = stats.conditional_mi(df, "gap", "gap", HPARAMS, max_conditioning=3)
    assert math.isnan(result.per_set[tuple(HPARAMS)])
    assert result.k == pytest.approx(1.0)


def test_conditional_mi_same_result_across_pair_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    df = grid(seeds=2)
    whole = stats.conditional_mi(df, "noise", "gap", HPARAMS)
    monkeypatch.setattr(stats, "PAIR_BLOCK", 50)
    blocked = stats.conditional_mi(df, "noise", "gap", HPARAMS)
    assert blocked.per_set == pytest.approx(whole.per_set)


def test_conditional_mi_rejects_incomplete_grid() -> None:
    df = grid().iloc[1:]
    with pytest.raises(ValueError, match=r"1 of 18 combinations"):
        stats.conditional_mi(df, "noise", "gap", HPARAMS)
    assert not math.isnan(
        stats.conditional_mi(df, "noise", "gap", HPARAMS, require_complete=False).k
    )


def test_conditional_mi_checks_grid_after_dropping_nan_rows() -> None:
    df = grid()
    df.loc[0, "noise"] = np.nan
    with pytest.raises(ValueError, match="not a full factorial"):
        stats.conditional_mi(df, "noise", "gap", HPARAMS)


# Robust sign error


def test_hoeffding_weight_hand_computed() -> None:
    # n = 2000, delta = 0.05: exp(-n delta^2 / 2) = exp(-2.5) = 0.0820850;
    # p = (1 - 0.1641700)^2 = 0.6986118; weight = p - 0.5.
    assert float(stats.hoeffding_weight(0.05, 2000)) == pytest.approx(0.1986118, abs=1e-6)
    assert float(stats.hoeffding_weight(-0.05, 2000)) == pytest.approx(0.1986118, abs=1e-6)
    # n = 1000: p = (1 - 2 exp(-1.25))^2 = 0.18 < 0.5, filtered out entirely.
    assert float(stats.hoeffding_weight(0.05, 1000)) == 0.0
    assert float(stats.hoeffding_weight(0.05, 1000, min_weight=0.0)) == pytest.approx(
        (1 - 2 * math.exp(-1.25)) ** 2
    )


def test_sign_error_zero_for_target_and_one_for_negation() -> None:
    df = grid(seeds=4)
    df["neg"] = -df["gap"]
    same = stats.robust_sign_error(df, "gap", "gap", HPARAMS, n_test=10_000)
    assert (same.mean, same.p90, same.max) == (0.0, 0.0, 0.0)
    neg = stats.robust_sign_error(df, "neg", "gap", HPARAMS, n_test=10_000)
    assert neg.mean == pytest.approx(1.0)
    x, f = stats.sign_error_cdf(neg)
    assert np.all(x == 1.0) and f[-1] == 1.0


def test_sign_error_environments_enumerate_one_hparam_changes() -> None:
    df = grid(seeds=4)
    envs = stats.robust_sign_error(df, "noise", "gap", HPARAMS, n_test=10_000).environments
    # Unordered value pairs of the changed hparam times the combinations of the other two.
    assert envs.groupby("hparam").size().to_dict() == {"lr": 3 * 6, "depth": 3 * 6, "wd": 1 * 9}
    assert (envs["n_pairs"] == 16).all()
    seeded = stats.robust_sign_error(df, "noise", "gap", HPARAMS, 10_000, match=["seed"])
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
    w = [float(stats.hoeffding_weight(df.gap[a] - df.gap[b], n)) for a, b in pairs]
    # m orders (0,2), (0,3) wrongly? (0,2): dm<0, dg<0 ok; (0,3): dm>0, dg<0 wrong;
    # (1,2): dm<0, dg<0 ok; (1,3): dm>0, dg>0 ok.
    err = [0.0, 1.0, 0.0, 0.0]
    result = stats.robust_sign_error(df, "m", "gap", ["lr"], n_test=n, min_ess=1)
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
    result = stats.robust_sign_error(small, "noise", "gap", HPARAMS, n_test=10**7, min_ess=12)
    envs = result.environments
    assert (envs["ess"] == envs["n_pairs"]).all()
    involves_depth8 = (envs["depth"] == 8) | (
        (envs["hparam"] == "depth") & ((envs["value_a"] == 8) | (envs["value_b"] == 8))
    )
    assert not envs.loc[involves_depth8, "kept"].any()
    assert envs.loc[~involves_depth8, "kept"].all()
    assert (envs.loc[involves_depth8, "ess"] < 12).all()
    at_boundary = stats.robust_sign_error(small, "noise", "gap", HPARAMS, 10**7, min_ess=16)
    assert (at_boundary.environments["kept"] == envs["kept"]).all()
    above = stats.robust_sign_error(small, "noise", "gap", HPARAMS, 10**7, min_ess=16.5)
    assert not above.environments["kept"].any() and math.isnan(above.mean)
    kept = envs.loc[envs["kept"], "sign_error"]
    assert result.mean == pytest.approx(kept.mean())
    assert result.max == pytest.approx(kept.max())
    # the reference's figures: np.percentile over both orders of every environment
    assert result.p90 == pytest.approx(np.percentile([*kept, *kept], 90))
    empirical = stats.robust_sign_error(
        small, "noise", "gap", HPARAMS, 10**7, min_ess=12, quantile="empirical"
    )
    assert empirical.p90 == pytest.approx(np.sort(kept)[math.ceil(0.9 * len(kept)) - 1])


def test_sign_error_quantile_reference_and_empirical_by_hand() -> None:
    errors = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # listed twice: 12 values, position 0.9 * 11 = 9.9 between 0.4 and 0.5
    assert stats.sign_error_quantile(errors, 0.9) == pytest.approx(0.49)
    # inverted CDF: the ceil(0.9 * 6) = 6th smallest
    assert stats.sign_error_quantile(errors, 0.9, "empirical") == pytest.approx(0.5)
    # neither is linear interpolation over the list once (position 4.5: 0.45)
    assert np.quantile(errors, 0.9) == pytest.approx(0.45)


def test_hoeffding_threshold_is_where_the_weight_starts() -> None:
    # 215 test examples (the digits' IID test set): 0.134, as the issue computes by hand
    assert stats.hoeffding_threshold(215) == pytest.approx(0.1337, abs=1e-4)
    t = stats.hoeffding_threshold(1000)
    assert stats.hoeffding_weight(t * 0.999, 1000) == 0.0 < stats.hoeffding_weight(t * 1.001, 1000)


def test_bootstrap_interval_by_hand() -> None:
    # two units 0 and 1: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([0.3, 0.3, math.nan]) == (0.3, 0.3)
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.3]))
    lo, hi = stats.bootstrap_ci(np.random.default_rng(0).normal(size=400))
    assert lo < 0 < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.2)


def test_jackknife_interval_by_hand() -> None:
    # one row per seed, values 1..4: leave-one-out means 3, 8/3, 7/3, 2; the jackknife se
    # of a mean is the standard deviation over sqrt(n): 1.291 / 2
    df = pd.DataFrame({"seed": [0, 1, 2, 3], "v": [1.0, 2.0, 3.0, 4.0]})
    lo, hi = stats.jackknife_ci(df, lambda d: d["v"].mean())
    se = np.std([1, 2, 3, 4], ddof=1) / 2
    assert (lo, hi) == pytest.approx((2.5 - 1.959964 * se, 2.5 + 1.959964 * se))
    assert all(math.isnan(v) for v in stats.jackknife_ci(df.head(1), lambda d: 0.0))


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
        result = stats.granulated_kendall(d, "m", "g", ["h"])
        return [result.psi, result.per_hparam["h"]]

    assert psi(df) == pytest.approx([1 / 3, 1 / 3])
    lo, hi = stats.jackknife_cis(df, psi)
    assert lo == pytest.approx([1 / 3 - Z95 * 2 / 3] * 2)
    assert hi == pytest.approx([1 / 3 + Z95 * 2 / 3] * 2)


def test_sign_error_interval_by_hand() -> None:
    # 9 pairs of equal weight 1/2 (gaps >= 0.2 apart, 10^7 test examples), the three with
    # b's seed 0 reversed: 1/3. A draw with c_s copies of seed s weighs pair (a_s, b_t) by
    # c_s c_t, so its error is c_0 sum_s c_s / (sum_s c_s)^2 = c_0 / 3, with c_0 ~
    # Binomial(3, 1/3): P(c_0 = 3) = 1/27 < 5%, P(c_0 = 0) = 8/27 > 5%, so the 90% interval
    # is (0, 2/3). With one environment the p90 is its error.
    def result(**kwargs):
        return stats.robust_sign_error(three_seeds(), "m", "g", ["h"], 10**7, min_ess=1, **kwargs)

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
        return stats.conditional_mi(d, "m", "gap", HPARAMS).k

    loo = np.array([k(df[df["seed"] != s]) for s in range(4)])
    se = math.sqrt(3 / 4 * float(np.sum((loo - loo.mean()) ** 2)))
    lo, hi = stats.jackknife_ci(df, k)
    assert (lo, hi) == pytest.approx((k(df) - Z95 * se, k(df) + Z95 * se))
    assert lo < k(df) < hi


def test_intervals_contain_the_estimate_and_shrink_with_more_seeds() -> None:
    def widths(seeds: int) -> list[float]:
        df = grid(seeds=seeds, rng_seed=1).assign(m=lambda d: d["gap"] + 0.03 * d["noise"])
        sign = stats.robust_sign_error(df, "m", "gap", HPARAMS, 10**7, min_ess=1, unit="seed")
        psi = stats.granulated_kendall(df, "m", "gap", HPARAMS).psi
        k = stats.conditional_mi(df, "m", "gap", HPARAMS).k
        intervals = [
            (sign.mean, sign.mean_ci),
            (sign.p90, sign.p90_ci),
            (
                psi,
                stats.jackknife_ci(
                    df, lambda d: stats.granulated_kendall(d, "m", "gap", HPARAMS).psi
                ),
            ),
            (k, stats.jackknife_ci(df, lambda d: stats.conditional_mi(d, "m", "gap", HPARAMS).k)),
        ]
        for estimate, (lo, hi) in intervals:
            assert lo <= estimate <= hi
        return [hi - lo for _, (lo, hi) in intervals]

    few, many = widths(3), widths(24)
    assert all(m < f for m, f in zip(many, few)), (few, many)


def test_selection_takes_the_measures_direction() -> None:
    df = pd.DataFrame({"m": [1.0, 2.0, 3.0, 4.0, 5.0], "g": [0.5, 0.4, 0.3, 0.2, 0.1]})
    assert stats.normalized_regret(df, "m", "g") == 1.0
    assert stats.normalized_regret(df, "m", "g", direction=-1) == 0.0
    assert stats.top_k_hit_rate(df, "m", "g", direction=-1) == 1.0


def test_score_config_defaults_are_the_references() -> None:
    config = stats.ScoreConfig()
    assert (config.min_ess, config.quantile) == (12.0, "reference")
    with pytest.raises(ValueError, match=r"ScoreConfig\.quantile"):
        stats.ScoreConfig(quantile="linear")


def test_sign_error_ties_in_the_measure_count_one_half() -> None:
    df = grid(seeds=4).assign(const=1.0)
    assert stats.robust_sign_error(df, "const", "gap", HPARAMS, 10_000).mean == 0.5


# Selection: regret and hit rate


def test_regret_zero_for_oracle_and_one_for_anti_oracle() -> None:
    df = grid(seeds=2)
    df["neg"] = -df["gap"]
    assert stats.normalized_regret(df, "gap", "gap") == 0.0
    assert stats.normalized_regret(df, "neg", "gap") == 1.0
    assert stats.top_k_hit_rate(df, "gap", "gap") == 1.0
    assert stats.top_k_hit_rate(df, "neg", "gap") == 0.0


def test_regret_and_hit_rate_by_hand_with_ties_and_groups() -> None:
    df = pd.DataFrame(
        {
            "task": ["a"] * 5 + ["b"] * 5,
            "g": [0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 50.0],
            "m": [5.0, 0.0, 0.0, 1.0, 2.0, 3.0, 2.0, 9.0, 9.0, 9.0],
        }
    )
    # Task a: tie between g = 1 and g = 2 -> mean 1.5 -> regret 1.5 / 4; top-1 is g = 0: no hit.
    # Task b: picks g = 20 -> regret 10 / 40; top-1 (ceil(0.2 * 5)) is g = 10: no hit.
    assert stats.normalized_regret(df, "m", "g", by=["task"]) == pytest.approx((0.375 + 0.25) / 2)
    assert stats.top_k_hit_rate(df, "m", "g", by=["task"]) == 0.0
    # frac 0.4 -> top-2: task a has one of the two tied picks in (g = 1), task b's pick is in.
    assert stats.top_k_hit_rate(df, "m", "g", frac=0.4, by=["task"]) == pytest.approx(0.75)


# Score table


def test_score_table_rows_and_columns_agree_with_functions() -> None:
    df = grid(seeds=4)
    df["gap_ood"] = df["gap"] + 0.02 * df["noise"]
    table = stats.score_table(
        df, ["noise", "gap"], ["gap", "gap_ood"], HPARAMS, {"gap": 10_000, "gap_ood": 2_000}
    )
    assert len(table) == 4
    for column in ["tau", "psi", "psi_lr", "psi_depth", "psi_wd", "k", "sign_error_mean"]:
        assert column in table.columns
    for column in ["sign_error_p90", "sign_error_max", "regret", "hit_rate"]:
        assert column in table.columns
    row = table.set_index(["measure", "target"]).loc[("noise", "gap_ood")]
    assert row["tau"] == pytest.approx(stats.kendall_tau(df, "noise", "gap_ood"))
    assert row["k"] == pytest.approx(stats.conditional_mi(df, "noise", "gap_ood", HPARAMS).k)
    expected = stats.robust_sign_error(df, "noise", "gap_ood", HPARAMS, n_test=2_000)
    assert row["sign_error_mean"] == pytest.approx(expected.mean, nan_ok=True)
    oracle = table.set_index(["measure", "target"]).loc[("gap", "gap")]
    assert (oracle["tau"], oracle["psi"], oracle["k"], oracle["regret"]) == pytest.approx(
        (1.0, 1.0, 1.0, 0.0)
    )
    assert oracle["tau_b"] == pytest.approx(1.0)
    # a measure declared to run the other way selects its largest value: the worst model
    flipped = stats.score_table(df, ["gap"], ["gap"], HPARAMS, 10_000, directions={"gap": -1})
    assert flipped.loc[0, "regret"] == 1.0 and flipped.loc[0, "hit_rate"] == 0.0


def test_selection_scores_are_nan_when_the_measure_is_missing_everywhere():
    df = pd.DataFrame({"m": [np.nan] * 4, "g": [0.1, 0.2, 0.3, 0.4]})
    assert math.isnan(stats.normalized_regret(df, "m", "g"))
    assert math.isnan(stats.top_k_hit_rate(df, "m", "g"))
