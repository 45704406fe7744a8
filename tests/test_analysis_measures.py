"""Study 2's analyses (analysis/measures_*.py) and study files: each score checked against
scipy/numpy or a hand-derived value on a synthetic ledger whose gaps are built from the
hyperparameters, and the report end to end."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext, Report
from shiftbench.spec.study import load_study
from shiftbench.studies.generalization_measures import measure_table, stats

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = "rotate-30,color"
ANALYSES = [
    "measures_overview",
    "measures_stability",
    "measures_kendall",
    "measures_cmi",
    "measures_sign_error",
    "measures_selection",
    "measures_claims",
]


def ledger() -> pd.DataFrame:
    """3 depths x 2 learning rates x 4 seeds on ShiftedDigits (rotate-30, color) plus one
    model below 99% training accuracy. gap_iid = 0.2 depth + 0.3 [lr = 0.2] + seed jitter:
    changing one hyperparameter moves the gap by >= 0.2, enough for Hoeffding weights on
    215 held-out digits. rotate-30's gap is ordered as gap_iid, color's the other way;
    measure.none is undefined (NaN) on every model."""
    rng = np.random.default_rng(0)
    rows = []
    for depth in (1, 2, 3):
        for lr in (0.1, 0.2):
            for seed in range(4):
                gap = 0.2 * depth + 0.3 * (lr == 0.2) + 0.001 * seed
                rows.append(
                    {
                        "study": "s", "trial_id": f"d{depth}l{lr}s{seed}", "attempt": 0,
                        "status": "done", "step": 100, "dataset": "shifted_digits",
                        "ds.shifts": SHIFTS, "ds.test_env": 1, "ds.holdout_fraction": 0.2,
                        "ds.split_seed": 0, "obj.depth": depth, "solver": "sgd", "hp.lr": lr,
                        "seed": seed, "train_loss": 0.01, "train_acc": 1.0, "id_acc": 1.0 - gap,
                        "env1_acc": 0.9 - gap / 2, "env2_acc": 0.1 + gap / 2,
                        "measure.gap": gap, "measure.neg": -gap,
                        "measure.noise": float(rng.normal()), "measure.none": math.nan,
                    }
                )  # fmt: skip
    rows.append({**rows[0], "trial_id": "weak", "train_acc": 0.9, "measure.gap": -5.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table() -> measure_table.MeasureTable:
    return measure_table.build(ledger())


def analysis(name: str):
    return registry.analysis(name)


def test_the_synthetic_table_has_the_intended_targets(table):
    models = table.models()
    assert len(models) == 24 and table.n_unconverged == 1
    assert table.hparams == ("obj.depth", "hp.lr")
    np.testing.assert_allclose(models["gap_iid"], models["measure.gap"])
    np.testing.assert_allclose(models["gap_ood_rotate-30"], 0.1 + models["measure.gap"] / 2)
    np.testing.assert_allclose(models["err_ood_color"], 0.9 - models["measure.gap"] / 2)


def test_kendall_scores_match_scipy(table):
    scores = analysis("measures_kendall").scores(table).set_index(["measure", "target"])
    models = table.models()
    assert scores.loc[("measure.gap", "gap_iid"), "tau"] == pytest.approx(1.0)
    assert scores.loc[("measure.gap", "gap_ood_color"), "tau"] == pytest.approx(-1.0)
    assert scores.loc[("measure.neg", "gap_ood_rotate-30"), "tau"] == pytest.approx(-1.0)
    ref = scipy_stats.kendalltau(models["measure.noise"], models["gap_ood_color"]).statistic
    assert scores.loc[("measure.noise", "gap_ood_color"), "tau"] == pytest.approx(ref)
    # psi_depth: mean tau over the (lr, seed) groups, each of 3 depths, computed by scipy
    # (no ties here, so Jiang's tau is tau-b)
    groups = [g for _, g in models.groupby(["hp.lr", "seed"])]
    ref = np.mean(
        [scipy_stats.kendalltau(g["measure.noise"], g["gap_iid"]).statistic for g in groups]
    )
    assert scores.loc[("measure.noise", "gap_iid"), "psi_depth"] == pytest.approx(ref)
    assert scores.loc[("measure.gap", "gap_iid"), "psi"] == pytest.approx(1.0)


def test_stability_is_the_spread_of_tau_over_shifts(table):
    frame = analysis("measures_stability").stability(table).set_index("measure")
    models = table.models()
    for measure in ("gap", "neg", "noise"):
        taus = [
            scipy_stats.kendalltau(models[f"measure.{measure}"], models[t]).statistic
            for t in ("gap_ood_rotate-30", "gap_ood_color")
        ]
        assert frame.loc[measure, "tau_shift_std"] == pytest.approx(np.std(taus, ddof=1))
        assert frame.loc[measure, "tau_shift_mean"] == pytest.approx(np.mean(taus))
    assert frame.loc["gap", "tau_shift_std"] == pytest.approx(math.sqrt(2))  # +1 and -1
    # jackknife over the 4 seeds: the gap's tau is 1 without any seed, so no spread
    assert frame.loc["gap", ["tau_iid_lo", "tau_iid_hi"]].tolist() == pytest.approx([1, 1])
    noise = frame.loc["noise"]
    assert noise["tau_iid_lo"] < noise["tau_iid"] < noise["tau_iid_hi"]
    # color's gap is rotate-30's reversed: the mean tau over the two is 0 on every subset
    assert noise[["tau_shift_mean_lo", "tau_shift_mean_hi"]].tolist() == pytest.approx([0, 0])
    assert frame.loc["gap", "tau_iid"] == pytest.approx(1.0)
    assert frame["tau_shift_std"].is_monotonic_increasing


def test_conditional_mi_of_a_perfect_or_reversed_measure_is_one(table):
    scores = analysis("measures_cmi").scores(table).set_index(["measure", "target"])["k"]
    assert scores["measure.gap", "gap_iid"] == pytest.approx(1.0)
    assert scores["measure.neg", "gap_iid"] == pytest.approx(1.0)  # K is blind to the sign
    assert 0.0 <= scores["measure.noise", "gap_iid"] < 0.5


def test_sign_error_is_zero_for_the_gap_and_one_for_its_negation(table):
    sign = analysis("measures_sign_error")
    summary, results = sign.scores(table, stats.ScoreConfig())
    summary = summary.set_index(["measure", "target"])
    # one environment per (pair of values of h, values of the other hparam):
    # depth: 3 pairs x 2 lrs; lr: 1 pair x 3 depths
    assert summary.loc[("gap", "gap_iid"), "environments"] == 9
    assert summary.loc[("gap", "gap_iid"), "environments_kept"] == 9
    assert summary.loc[("gap", "gap_iid"), ["mean", "p90", "max"]].tolist() == [0.0, 0.0, 0.0]
    assert summary.loc[("neg", "gap_iid"), "mean"] == pytest.approx(1.0)
    assert summary.loc[("gap", "gap_ood_color"), "mean"] == pytest.approx(1.0)
    x, y = sign.stats.sign_error_cdf(results["measure.gap", "gap_iid"])
    assert x.tolist() == [0.0] * 9 and y[-1] == 1.0
    # Dziugaite et al.'s Fig. 1 rows: over all environments, and per hyperparameter changed
    rows = sign.per_hparam(results, table.hparams, stats.ScoreConfig())
    rows = rows.set_index(["measure", "target", "hparam"])
    assert rows.loc[("gap", "gap_iid"), "environments_kept"].to_dict() == {
        "all": 9, "obj.depth": 6, "hp.lr": 3,
    }  # fmt: skip
    assert rows.loc[("neg", "gap_iid", "hp.lr"), ["mean", "p90", "max"]].tolist() == [1.0] * 3


def sign_error_report(tmp_path, frame: pd.DataFrame, **score_config) -> str:
    study = load_study(ROOT / "benchmarks" / "generalization_measures_digits.yml")
    study = dataclasses.replace(study, score_config=score_config)
    report = Report(tmp_path, "measures")
    analysis("measures_sign_error").run(AnalysisContext(study, frame, report))
    return report.finish().read_text()


def test_sign_error_keeps_the_papers_threshold_and_says_why_nothing_passed(tmp_path):
    two_seeds = ledger().query("seed < 2")
    # 2 seeds: at most 4 model pairs per environment, so none reaches the paper's ESS 12
    text = sign_error_report(tmp_path / "a", two_seeds)
    assert "effective sample size >= 12;" in text
    assert (
        "gap_iid: 0 of 9 environments kept, none reaching ESS 12 (largest ESS 4.00; an "
        "environment holds at most 4 model pairs, so ESS <= 4; with 215 test examples a pair "
        "weighs nothing unless its gaps differ by more than 0.134)"
    ) in text
    # a study may lower it, and the report then says so
    text = sign_error_report(tmp_path / "b", two_seeds, min_ess=3.5)
    assert "effective sample size >= 3.5 (this study's score_config; Dziugaite" in text
    assert "gap_iid: 9 of 9 environments kept" in text


def test_selection_regret_and_hit_rate(table):
    scores = analysis("measures_selection").scores(table, stats.ScoreConfig())
    scores = scores.set_index(["measure", "target"])[["regret", "hit_rate"]]
    assert scores.loc[("measure.gap", "gap_iid")].tolist() == [0.0, 1.0]
    assert scores.loc[("measure.neg", "gap_iid")].tolist() == [1.0, 0.0]
    # err_ood_color = 0.9 - gap / 2: the smallest gap is the worst model there
    assert scores.loc[("measure.gap", "err_ood_color"), "regret"] == pytest.approx(1.0)
    models = table.models()
    picked = models.loc[models["measure.noise"].idxmin(), "gap_iid"]
    lo, hi = models["gap_iid"].min(), models["gap_iid"].max()
    regret = scores.loc[("measure.noise", "gap_iid"), "regret"]
    assert regret == pytest.approx((picked - lo) / (hi - lo))
    assert scores.loc[("measure.none", "gap_iid")].isna().all()  # undefined on every model


def test_selection_follows_each_measures_direction_and_counts_each_shift_once():
    frame = ledger()
    gap = frame["measure.gap"]
    # registered calibration measures: a larger confidence predicts a smaller gap
    frame = frame.assign(**{"measure.confidence_train": -gap, "measure.ece_train": gap})
    table = measure_table.build(frame)
    selection = analysis("measures_selection")
    config = stats.ScoreConfig()
    long = selection.scores(table, config).set_index(["measure", "target"])
    assert long.loc[("measure.confidence_train", "gap_iid"), "direction"] == -1
    assert long.loc[("measure.confidence_train", "gap_iid"), "regret"] == 0.0  # its highest
    assert long.loc[("measure.confidence_train", "gap_iid"), "hit_rate"] == 1.0
    by_measure = selection.summary(long.reset_index(), table, config, "measure")
    row = by_measure.set_index("measure").loc["gap"]
    # regret 0 under rotate-30 (gap ordered as gap_iid) and 1 under color: mean 0.5 over
    # the two shifts, for the gap and the error alike (not 0.4 over five columns)
    assert (row["regret_iid"], row["regret_gap_ood"], row["regret_err_ood"]) == (0.0, 0.5, 0.5)
    # two shifts with regrets 0 and 1: resampled means 0, 1/2, 1 (1/4, 1/2, 1/4)
    assert (row["regret_gap_ood_lo"], row["regret_gap_ood_hi"]) == (0.0, 1.0)
    families = selection.summary(long.reset_index(), table, config, "family")
    calibration = families.set_index("family").loc["calibration"]
    assert (calibration["regret_iid"], calibration["regret_gap_ood"]) == (0.0, 0.5)
    # the family comparison orients tau by the direction too: -1 x -1 and +1 average to 1
    kendall = analysis("measures_kendall")
    taus = kendall.family_table(kendall.scores(table), table.gap_targets).set_index("family")
    assert taus.loc["calibration", "IID"] == pytest.approx(1.0)


def test_claims_by_hand(table):
    # gap: tau 1 with gap_iid and rotate-30, -1 with color (mean over shifts 0), the same
    # without any seed, so its intervals are points; neg: the mirror image (IID tau -1, so
    # its change is -1 x (-1 - 0) = 1). Across the three defined measures (gap, neg, noise,
    # noise's taus strictly inside (-1, 1)), rotate-30 orders them as IID does, color the
    # other way
    claims = analysis("measures_claims")
    measures, shifts = claims.rankings(table, stats.ScoreConfig())
    rows = measures.set_index("measure")
    for name, iid in (("gap", 1.0), ("neg", -1.0)):
        row = rows.loc[name]
        expected = {"tau_iid": iid, "tau_shift_mean": 0.0, "change": 1.0}
        for column, value in expected.items():
            assert [row[column], row[f"{column}_lo"], row[f"{column}_hi"]] == pytest.approx(
                [value] * 3, abs=1e-12
            )
        assert row["informative_iid"] and row["weaker_under_shift"]
        assert not row["holds_under_shift"]
    assert shifts.set_index("shift")["tau_across_measures"].to_dict() == pytest.approx(
        {"rotate-30": 1.0, "color": -1.0}
    )
    lines = claims.findings(measures, shifts, claims.families(table, stats.ScoreConfig()))
    assert lines[0].startswith("Claim 1") and "2 of 3 measures" in lines[0]
    assert "rotate-30 +1.000 [+1.000, +1.000]" in lines[0]


def test_overview_states_the_split_the_settings_and_why_aic_is_no_finding(tmp_path):
    frame = ledger()
    params = 100.0 * frame["obj.depth"]
    frame = frame.assign(
        **{
            "measure.params": params,
            "measure.aic": 2 * params + 0.01 * frame["seed"],  # -2 log L: small, near equal
            "n_train_examples": 648,
            "n_measure_examples": 215,
            "n_iid_test_examples": 215,
            "measure_config.bisection_depth": 8,
            "measure_config.mc_draws": 10,
        }
    )
    study = load_study(ROOT / "benchmarks" / "generalization_measures_digits.yml")
    report = Report(tmp_path, "measures")
    analysis("measures_overview").run(AnalysisContext(study, frame, report))
    text = report.finish().read_text()
    assert (
        "three disjoint parts: 648 trained on, 215 for the *_heldout measures, 215 IID test "
        "set (gap_iid)."
    ) in text
    assert "Measure settings (ledger `measure_config.*`): bisection_depth 8 (reference" in text
    assert "mc_draws" not in text.split("Measure settings")[1].split("\n")[0]  # the default
    # 3 depths x 8 models: tied pairs within a depth count 0 in Jiang's tau
    tau = (3 * 8 * 8) * 2 / (24 * 23)
    assert f"Kendall tau with `params` over the converged models: aic {tau:.3f}." in text


def test_report_end_to_end(tmp_path):
    study = load_study(ROOT / "benchmarks" / "generalization_measures_digits.yml")
    report = Report(tmp_path, "measures", interactive=True)  # the HTML site's figures too
    context = AnalysisContext(study, ledger(), report)
    for name in ANALYSES:
        analysis(name).run(context)
    text = report.finish().read_text()
    assert all(item.plotly["data"] for item in report.items if item.kind == "figure")
    assert "25 trained models; 1 did not reach 99% training accuracy" in text
    assert text.split("\n\n")[1] == "Reproduce:"
    assert "generalization_measures_digits.yml --store results\n" in text
    assert "Most stable across shifts" in text
    for name in (
        "measures_families_tau.png",
        "measures_tau_heatmap.png",
        "measures_sign_error_cdf.png",
        "measures_sign_error_per_hparam_gap_iid.png",
    ):
        assert (tmp_path / name).stat().st_size > 0
    tau = pd.read_csv(tmp_path / "measures_tau.csv").set_index("measure")
    assert tau.loc["gap", "gap_iid"] == pytest.approx(1.0)
    assert tau.columns.tolist() == ["gap_iid", "gap_ood_rotate-30", "gap_ood_color"]
    families = pd.read_csv(tmp_path / "measures_families_tau.csv").set_index("family")
    # the synthetic measures are not registered: one family of four (none is all NaN)
    assert families.loc["other", "measures"] == 4
    taus = tau.loc[["gap", "neg", "noise"], "gap_iid"]
    assert families.loc["other", "IID"] == pytest.approx(taus.mean())
    psi = pd.read_csv(tmp_path / "measures_psi_jiang.csv").set_index("measure")
    assert psi.columns.tolist() == ["psi_depth", "psi_lr", "psi", "psi_lo", "psi_hi", "tau"]
    known = psi.dropna(subset=["psi"])
    assert (known["psi_lo"] <= known["psi"]).all() and (known["psi"] <= known["psi_hi"]).all()
    for name, columns in (
        ("measures_cmi_intervals", ["k", "k_lo", "k_hi"]),
        ("measures_sign_error", ["mean", "mean_lo", "mean_hi", "p90", "p90_lo", "p90_hi"]),
        ("measures_psi_components", ["psi_lr", "psi_lr_lo", "psi_lr_hi"]),
    ):
        assert set(columns) <= set(pd.read_csv(tmp_path / f"{name}.csv").columns)
    for name in ("measures_psi", "measures_tau_b", "measures_cmi", "measures_regret"):
        assert (tmp_path / f"{name}.tex").read_text().startswith("\\begin{table}")
    targets = pd.read_csv(tmp_path / "measures_targets.csv").set_index("target")
    assert targets.loc["gap_iid", "n_test"] == int(int(1797 * 0.6) * 0.2)


def test_study_files_validate_without_data():
    cifar = load_study(ROOT / "benchmarks" / "generalization_measures.yml")
    assert cifar.resources.gpus > 0 and cifar.measure_config.bisection_depth == 15
    assert cifar.objective["target_loss"] == [0.01]
    assert len(cifar.seeds) == 10 and cifar.datasets["cifar10_c"]["measure_fraction"] == [0.1]
    digits = load_study(ROOT / "benchmarks" / "generalization_measures_digits.yml")
    assert digits.search_kind == "grid" and len(digits.trials()) == 2 * 2 * 3 * 10
    assert digits.datasets["shifted_digits"]["measure_fraction"] == [0.1]
    assert set(digits.analyses) == set(ANALYSES)
