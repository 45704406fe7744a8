"""Adaptive (Adam, RMSProp) vs non-adaptive (SGD, Momentum, Nesterov) optimizers at matched ID
accuracy (Naganuma et al. 2023, finding 1: adaptive optimizers do worse OOD). AdamW, not in the
paper, is compared with the non-adaptive ones apart (the same tests, its own table).

Points are trials (checkpoint chosen by training-domain validation), per condition; a
condition is tested when each family has 2 trials and the ID accuracies take 4 distinct
values.
Primary test: ordinary least squares ood = a + b x + c x^2 + d A, with x the ID accuracy
(centred) and A = 1 for an adaptive optimizer; ``d`` is the OOD difference at equal ID
accuracy, with its 95% CI and the two-sided t-test p-value (n - 4 degrees of freedom).
Check without the linear-model assumptions: a quadratic of OOD on ID fitted to all trials
pooled (no indicator), then a two-sided Mann-Whitney U test comparing the adaptive and the
non-adaptive residuals. The row ``all`` applies the Mann-Whitney test to the residuals of
every condition (each from its own pooled fit). Trials of one sample at different seeds are
treated as independent. Verdict: ``adaptive worse`` if d < 0 and p < 0.05, ``adaptive
better`` if d > 0 and p < 0.05, else ``no significant difference``. A verdict is marked
vacuous when every trial of the condition has the same OOD accuracy to within 0.01 (e.g. all
at a shortcut): the regression then compares noise.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext

ADAPTIVE = ("adam", "rmsprop")
NON_ADAPTIVE = ("sgd", "momentum", "nesterov")
EXTENSION = ("adamw",)
ALPHA = 0.05
FLAT_OOD = 0.01


def adaptive_gap(id_acc: np.ndarray, ood_acc: np.ndarray, adaptive: np.ndarray) -> dict:
    """The regression and Mann-Whitney comparisons of one condition (module docstring)."""
    returns = registry.analysis("optimizer_ood_returns")
    n, n_adaptive = len(id_acc), int(adaptive.sum())
    out = {
        "n_adaptive": n_adaptive,
        "n_non_adaptive": n - n_adaptive,
        "ood_range": float(np.ptp(ood_acc)) if n else np.nan,
    }
    if min(n_adaptive, n - n_adaptive) < 2 or not returns.distinct(id_acc):
        return out
    pooled = returns.quadratic_design(id_acc, id_acc.mean())
    fit = returns.ols(np.column_stack([pooled, adaptive.astype(float)]), ood_acc)
    lo, hi = fit.interval(3)
    residuals = returns.ols(pooled, ood_acc).residuals
    mw = stats.mannwhitneyu(residuals[adaptive], residuals[~adaptive], alternative="two-sided")
    return out | {
        "gap": fit.coef[3],
        "gap_lo": lo,
        "gap_hi": hi,
        "p_regression": fit.p_value(3),
        "median_resid_adaptive": float(np.median(residuals[adaptive])),
        "median_resid_non_adaptive": float(np.median(residuals[~adaptive])),
        "p_mann_whitney": float(mw.pvalue),
        "residuals": residuals,
    }


def verdict(gap: float, p: float) -> str:
    """The finding a condition supports at level ALPHA."""
    if not p < ALPHA:
        return "no significant difference"
    return "adaptive worse" if gap < 0 else "adaptive better"


def comparison(ledger: pd.DataFrame, adaptive_solvers: tuple[str, ...] = ADAPTIVE) -> pd.DataFrame:
    """One row per condition plus ``all`` (module docstring): ``adaptive_solvers`` (the
    paper's, or AdamW) against the non-adaptive ones."""
    points, condition = registry.analysis("optimizer_ood_returns").trial_points(ledger)
    if points.empty:
        return pd.DataFrame()
    points = points[points["solver"].isin(adaptive_solvers + NON_ADAPTIVE)]
    if not points["solver"].isin(adaptive_solvers).any():
        return pd.DataFrame()
    rows, adaptive_resid, other_resid = [], [], []
    for key, group in points.groupby(condition, dropna=False):
        adaptive = group["solver"].isin(adaptive_solvers).to_numpy()
        result = adaptive_gap(group["id_acc"].to_numpy(), group["ood_acc"].to_numpy(), adaptive)
        residuals = result.pop("residuals", None)
        if residuals is not None:
            adaptive_resid.append(residuals[adaptive])
            other_resid.append(residuals[~adaptive])
            result["verdict"] = verdict(result["gap"], result["p_regression"])
        rows.append({**dict(zip(condition, key)), **result})
    if adaptive_resid:
        a, b = np.concatenate(adaptive_resid), np.concatenate(other_resid)
        mw = stats.mannwhitneyu(a, b, alternative="two-sided")
        gap = float(np.median(a) - np.median(b))
        rows.append(
            {
                "dataset": "all",
                "n_adaptive": len(a),
                "n_non_adaptive": len(b),
                "median_resid_adaptive": float(np.median(a)),
                "median_resid_non_adaptive": float(np.median(b)),
                "p_mann_whitney": float(mw.pvalue),
                "verdict": verdict(gap, mw.pvalue),
            }
        )
    table = pd.DataFrame(rows)
    for column in condition:  # the ``all`` row's blanks must not turn integers into floats
        if pd.api.types.is_integer_dtype(points[column]):
            table[column] = table[column].astype("Int64")
    return table.rename(columns=lambda c: c.split(".", 1)[-1])


def run(context: AnalysisContext) -> None:
    table = comparison(context.ledger)
    if table.empty:
        context.report.text("No finished trials for the adaptive vs non-adaptive comparison.")
        return
    context.report.table(
        "optimizer_ood_adaptive",
        table,
        "Adaptive vs non-adaptive optimizers at matched ID accuracy: OOD gap d (OLS of OOD on "
        "ID, ID^2 and an adaptive indicator; 95% CI, t-test p) and a Mann-Whitney test on the "
        "residuals of the pooled quadratic fit",
    )
    context.report.text(summary(table))
    extension = comparison(context.ledger, EXTENSION)
    if not extension.empty:
        context.report.table(
            "optimizer_ood_adaptive_adamw",
            extension,
            "Extension, not in the paper: AdamW vs the non-adaptive optimizers at matched ID "
            "accuracy (the same tests; 'adaptive' means AdamW here)",
        )


def summary(table: pd.DataFrame) -> str:
    """A sentence per condition stating, with its numbers, whether finding 1 holds."""
    lines = ["**Finding 1 (adaptive optimizers worse OOD at matched ID accuracy):**", ""]
    for row in table.to_dict("records"):
        name = ", ".join(
            f"{k}={row[k]}" for k in row if k not in _RESULT_COLUMNS and pd.notna(row[k])
        )
        if pd.isna(row.get("verdict")):
            lines.append(
                f"- {name}: no test (needs 2 trials per family and 4 distinct ID accuracies)."
            )
        elif row["dataset"] == "all":
            lines.append(
                f"- {name} (residuals pooled over conditions): median residual "
                f"{row['median_resid_adaptive']:+.3f} adaptive vs "
                f"{row['median_resid_non_adaptive']:+.3f} non-adaptive, Mann-Whitney "
                f"p = {row['p_mann_whitney']:.3g}: {row['verdict']}."
            )
        else:
            lines.append(
                f"- {name}: d = {row['gap']:+.3f} (95% CI {row['gap_lo']:+.3f} to "
                f"{row['gap_hi']:+.3f}), t-test p = {row['p_regression']:.3g}, Mann-Whitney "
                f"p = {row['p_mann_whitney']:.3g}: {row['verdict']}."
                + (
                    f" Vacuous: every trial's OOD accuracy lies within {row['ood_range']:.3f} "
                    "(all trials at one point, e.g. the shortcut)."
                    if row["ood_range"] < FLAT_OOD
                    else ""
                )
            )
    tested = table[table["dataset"] != "all"].dropna(subset=["verdict"])
    tested = tested[~(tested["ood_range"] < FLAT_OOD)]
    worse = int((tested["verdict"] == "adaptive worse").sum())
    pooled = table[table["dataset"] == "all"]
    holds = not pooled.empty and pooled["verdict"].iloc[0] == "adaptive worse"
    lines += [
        "",
        f"Conclusion: adaptive optimizers are significantly worse OOD at matched ID accuracy "
        f"in {worse} of {len(tested)} tested, non-vacuous conditions; the finding "
        f"{'holds' if holds else 'does not hold'} here (rule: it holds when the pooled "
        "Mann-Whitney test finds the adaptive residuals lower at p < 0.05).",
    ]
    return "\n".join(lines)


_RESULT_COLUMNS = {
    "n_adaptive",
    "ood_range",
    "n_non_adaptive",
    "gap",
    "gap_lo",
    "gap_hi",
    "p_regression",
    "median_resid_adaptive",
    "median_resid_non_adaptive",
    "p_mann_whitney",
    "verdict",
}
