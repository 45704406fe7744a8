"""Dziugaite et al.'s (2020) robust sign error of every measure against the generalization
gap, IID and under each shift, over the converged models: environments are pairs of
configurations that differ in one hyperparameter, pairs of models are weighted by the
Hoeffding probability that their gaps are truly ordered (given the test-set size behind the
target), and environments with an effective sample size below the paper's 12 (or the
study's ``score_config.min_ess``, which the report then names) are dropped. Summary (mean,
90th percentile, max over environments), the number of environments kept per target with
the reason when none is, and the empirical CDF per target."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from shiftbench import measure_table, stats
from shiftbench.report import AnalysisContext

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
            )
            results[measure, target] = result
            envs = result.environments
            kept = envs["kept"].astype(bool)
            rows.append(
                {
                    "measure": measure_table.short(measure),
                    "target": target,
                    "mean": result.mean,
                    "p90": result.p90,
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
        "Robust sign error of each measure with the gap: mean, p90 and max over environments",
    )
    targets = [t for t in table.gap_targets if t in table.n_test]
    context.report.figure(
        "measures_sign_error_cdf", cdf_figure(results, targets), "Sign-error CDF per target"
    )
