"""Dziugaite et al.'s (2020) robust sign error of every measure against the generalization
gap, IID and under each shift, over the converged models: environments are pairs of
configurations that differ in one hyperparameter, pairs of models are weighted by the
Hoeffding probability that their gaps are truly ordered (given the test-set size behind the
target), and environments with too small an effective sample size are dropped. Summary
(mean, 90th percentile, max over environments) and the empirical CDF per target."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from shiftbench import measure_table, stats
from shiftbench.report import AnalysisContext

MIN_ESS = 12.0
"""Dziugaite et al.'s effective-sample-size threshold."""
HIGHLIGHT = 3
"""Measures drawn in colour in each CDF panel (lowest mean sign error)."""


def min_ess(n_seeds: int) -> float:
    """MIN_ESS, or half the most an environment can reach when seeds are few: an
    environment holds n_seeds^2 pairs of models, so ESS <= n_seeds^2."""
    return min(MIN_ESS, n_seeds**2 / 2)


def scores(
    table: measure_table.MeasureTable, ess: float
) -> tuple[pd.DataFrame, dict[tuple[str, str], stats.SignErrorResult]]:
    """Long summary table and the full result per (measure, target) with a known n_test."""
    models = table.models()
    rows, results = [], {}
    for target in table.gap_targets:
        if target not in table.n_test:
            continue
        for measure in table.measures:
            result = stats.robust_sign_error(
                models, measure, target, table.hparams, table.n_test[target], ess
            )
            results[measure, target] = result
            kept = result.environments["kept"].astype(bool)
            rows.append(
                {
                    "measure": measure_table.short(measure),
                    "target": target,
                    "mean": result.mean,
                    "p90": result.p90,
                    "max": result.max,
                    "environments_kept": int(kept.sum()),
                    "environments": len(kept),
                }
            )
    return pd.DataFrame(rows), results


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
    ess = min_ess(models["seed"].nunique())
    summary, results = scores(table, ess)
    context.report.text(
        f"Robust sign error: environments kept when their effective sample size is >= {ess:g} "
        f"(Dziugaite et al.: {MIN_ESS:g}; with {models['seed'].nunique()} seed(s) an "
        "environment holds at most seeds^2 pairs). Test-set sizes behind the Hoeffding "
        "weights: " + ", ".join(f"{t} {table.n_test[t]}" for t in table.gap_targets) + "."
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
