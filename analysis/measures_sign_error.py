"""Dziugaite et al.'s (2020) robust sign error of every measure against the generalization
gap, IID and under each shift, over the converged models: environments are pairs of
configurations that differ in one hyperparameter, pairs of models are weighted by the
Hoeffding probability that their gaps are truly ordered (given the test-set size behind the
target), and environments with an effective sample size below the paper's 12 (or the
study's ``score_config.min_ess``, which the report then names) are dropped. Summary (mean,
90th percentile, max over environments), the number of environments kept per target with
the reason when none is, and the empirical CDF per target; per hyperparameter, Dziugaite et
al.'s Fig. 1 layout (one row per hyperparameter changed and one over all environments, the
measures ordered by their mean sign error, each column the CDF of the sign errors with the
mean, 90th percentile and max marked; ``figure_cdf_all_measures.make_figure``) and its
table. The mean and the 90th percentile come with percentile bootstrap intervals over the
seeds (`shiftbench.stats.robust_sign_error` says why the seed, not the environment, is the
unit, and why a bootstrap)."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}

HIGHLIGHT = 3
"""Measures drawn in colour in each CDF panel (lowest mean sign error)."""


def scores(
    table: measure_table.MeasureTable, config: stats.ScoreConfig
) -> tuple[pd.DataFrame, dict[tuple[str, str], stats.SignErrorResult]]:
    """Long summary table and the full result per (measure, target) with a known n_test."""
    models = table.models()
    rows, results = [], {}
    for target in table.gap_targets:
        if target not in table.n_test:
            continue
        for measure in table.measures:
            result = stats.robust_sign_error(
                models,
                measure,
                target,
                table.hparams,
                table.n_test[target],
                config.min_ess,
                quantile=config.quantile,
                unit="seed",
                confidence=config.confidence,
                resamples=config.bootstrap,
                seed=config.seed,
            )
            results[measure, target] = result
            envs = result.environments
            kept = envs["kept"].astype(bool)
            rows.append(
                {
                    "measure": measure_table.short(measure),
                    "target": target,
                    "mean": result.mean,
                    "mean_lo": result.mean_ci[0],
                    "mean_hi": result.mean_ci[1],
                    "p90": result.p90,
                    "p90_lo": result.p90_ci[0],
                    "p90_hi": result.p90_ci[1],
                    "max": result.max,
                    "environments_kept": int(kept.sum()),
                    "environments": len(kept),
                    "max_ess": float(envs["ess"].max()) if len(envs) else math.nan,
                    "max_pairs": int(envs["n_pairs"].max()) if len(envs) else 0,
                }
            )
    return pd.DataFrame(rows), results


def filter_summary(summary: pd.DataFrame, n_test: dict[str, int], min_ess: float) -> list[str]:
    """Per target, how many environments passed the ESS filter, and why none did when none
    did (the environments' largest ESS, their most model pairs, and the gap difference a
    pair needs to weigh anything with that many test examples). The weights depend on the
    target only, so every measure defined on the same models keeps the same environments;
    the measure keeping most is reported."""
    lines = []
    for target, rows in summary.groupby("target", sort=False):
        best = rows.loc[rows["environments_kept"].idxmax()]
        line = f"{target}: {best['environments_kept']} of {best['environments']} environments kept"
        if best["environments_kept"] == 0:
            threshold = stats.hoeffding_threshold(n_test[target])
            line += (
                f", none reaching ESS {min_ess:g} (largest ESS {best['max_ess']:.2f}; an "
                f"environment holds at most {best['max_pairs']} model pairs, so ESS <= "
                f"{best['max_pairs']}; with {n_test[target]} test examples a pair weighs "
                f"nothing unless its gaps differ by more than {threshold:.3f})"
            )
        lines.append(line)
    return lines


BINS = np.linspace(0, 1, 100)
"""Sign-error grid of the per-hyperparameter CDF figure (the reference's 100 bins)."""


def per_hparam(results: dict, hparams: tuple[str, ...], config: stats.ScoreConfig) -> pd.DataFrame:
    """One row per (measure, target, hparam or ``all``): the kept environments in which that
    hyperparameter changes, and the mean, 90th percentile and max of their sign errors."""
    rows = []
    for (measure, target), result in results.items():
        envs = result.environments
        kept = envs[envs["kept"].astype(bool)]
        for h in ("all", *hparams):
            errors = (kept if h == "all" else kept[kept["hparam"] == h])["sign_error"]
            errors = errors.to_numpy(float)
            some = len(errors) > 0
            rows.append(
                {
                    "measure": measure_table.short(measure),
                    "target": target,
                    "hparam": h,
                    "environments_kept": len(errors),
                    "mean": errors.mean() if some else math.nan,
                    "p90": stats.sign_error_quantile(errors, 0.9, config.quantile)
                    if some
                    else math.nan,
                    "max": errors.max() if some else math.nan,
                }
            )
    return pd.DataFrame(rows)


def per_hparam_figure(
    results: dict, target: str, hparams: tuple[str, ...], quantile: str
) -> plt.Figure:
    """Dziugaite et al.'s Fig. 1 for one target: rows ``all`` and each hyperparameter,
    columns the measures by mean sign error over all environments, colour the CDF."""
    curves = {m: r for (m, t), r in results.items() if t == target and not math.isnan(r.mean)}
    order = sorted(curves, key=lambda m: curves[m].mean)
    rows = ("all", *hparams)
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(max(6, 0.2 * len(order) + 2), 1.3 * len(rows) + 1.2),
        sharex=True, squeeze=False, layout="constrained",
    )  # fmt: skip
    for ax, h in zip(axes[:, 0], rows):
        grid = np.full((len(BINS), len(order)), np.nan)
        for i, measure in enumerate(order):
            envs = curves[measure].environments
            kept = envs[envs["kept"].astype(bool) & ((envs["hparam"] == h) | (h == "all"))]
            errors = kept["sign_error"].to_numpy(float)
            if len(errors) == 0:
                continue
            grid[:, i] = (errors[None, :] <= BINS[:, None]).mean(axis=1)
            p90 = stats.sign_error_quantile(errors, 0.9, quantile)
            for value, style in ((errors.mean(), ":"), (p90, "--")):
                ax.plot([i - 0.5, i + 0.5], [value, value], "k", ls=style, lw=0.8)
            ax.plot([i - 0.5, i + 0.5], [errors.max()] * 2, color="limegreen", lw=0.8)
        image = ax.imshow(
            grid, origin="lower", aspect="auto", cmap="Blues_r", vmin=0.5, vmax=1,
            interpolation="nearest", extent=(-0.5, len(order) - 0.5, 0, 1),
        )  # fmt: skip
        ax.set_ylabel(f"{h.split('.', 1)[-1]}\n({len(kept) if order else 0})", fontsize=7)
        ax.set_yticks([0, 0.5, 1])
    axes[-1, 0].set_xticks(range(len(order)), [measure_table.short(m) for m in order])
    axes[-1, 0].tick_params(axis="x", rotation=90, labelsize=6)
    fig.colorbar(image, ax=axes[:, 0], shrink=0.6, label="CDF of the sign error")
    fig.suptitle(f"{target}: sign error (mean dotted, p90 dashed, max green)", fontsize=9)
    return fig


def cdf_figure(results: dict, targets: list[str]) -> plt.Figure:
    """One panel per target: every measure's CDF in grey, the best few in colour."""
    cols = min(3, len(targets))
    rows = math.ceil(len(targets) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, layout="constrained"
    )
    for ax, target in zip(axes.flat, targets):
        curves = {m: r for (m, t), r in results.items() if t == target and not math.isnan(r.mean)}
        best = sorted(curves, key=lambda m: curves[m].mean)[:HIGHLIGHT]
        for measure, result in curves.items():
            x, y = stats.sign_error_cdf(result)
            if measure in best:
                ax.step(x, y, where="post", lw=1.6, label=measure_table.short(measure))
            else:
                ax.step(x, y, where="post", color="0.8", lw=0.6)
        ax.set(title=target, xlim=(0, 1), ylim=(0, 1.02), xlabel="sign error", ylabel="CDF")
        if best:
            ax.legend(fontsize=7, loc="lower right")
        else:
            ax.text(0.5, 0.5, "no environment kept", ha="center", transform=ax.transAxes)
    for ax in list(axes.flat)[len(targets) :]:
        ax.axis("off")
    return fig


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    models = table.models()
    if len(models) < 2 or not table.measures or "gap_iid" not in table.n_test:
        context.report.text("Robust sign error: no converged models or unknown test-set sizes.")
        return
    config = stats.ScoreConfig(**context.study.score_config)
    summary, results = scores(table, config)
    threshold = f"effective sample size >= {config.min_ess:g}"
    if config.min_ess != stats.MIN_ESS:
        threshold += f" (this study's score_config; Dziugaite et al. use {stats.MIN_ESS:g})"
    context.report.text(
        f"Robust sign error: environments kept when their {threshold}; "
        f"{models['seed'].nunique()} seed(s), so an environment holds at most seeds^2 model "
        f"pairs. 90th percentile: {config.quantile} quantile. Test-set sizes behind the "
        "Hoeffding weights: "
        + ", ".join(f"{t} {table.n_test[t]}" for t in table.gap_targets)
        + ". Environments kept per target: "
        + "; ".join(filter_summary(summary, table.n_test, config.min_ess))
        + "."
    )
    context.report.table(
        "measures_sign_error",
        summary,
        "Robust sign error of each measure with the gap: mean, p90 and max over the kept "
        f"environments; mean and p90 with {config.confidence:.0%} bootstrap intervals over "
        "seeds (_lo, _hi)",
    )
    targets = [t for t in table.gap_targets if t in table.n_test]
    context.report.figure(
        "measures_sign_error_cdf", cdf_figure(results, targets), "Sign-error CDF per target"
    )
    context.report.table(
        "measures_sign_error_per_hparam",
        per_hparam(results, table.hparams, config),
        "Robust sign error per hyperparameter changed (and over all environments)",
    )
    for target in targets:
        if summary.loc[summary["target"] == target, "environments_kept"].max() > 0:
            context.report.figure(
                f"measures_sign_error_per_hparam_{target}",
                per_hparam_figure(results, target, table.hparams, config.quantile),
                f"Sign-error CDF per hyperparameter, {target} (Dziugaite et al. Fig. 1)",
            )
