"""ID vs OOD accuracy per optimizer and condition: scatter, fitted quadratic with a 95%
confidence band, and the shape of the returns (Naganuma et al. 2023, finding 2).

Points are trials (checkpoint chosen by training-domain validation). The fit is ordinary
least squares of OOD on ID, centred: ood = a + b (id - mean id) + c (id - mean id)^2; the
band is the pointwise 95% confidence interval of the fitted mean (t with n - 3 degrees of
freedom). Rule: if the 95% CI of the quadratic coefficient c contains 0, the returns are
``linear``; if it lies above 0, ``increasing`` (convex); below 0, ``diminishing``
(concave). Fewer than 4 distinct ID values (3 would be interpolated exactly) or no
residual variance: ``undetermined``. ``b`` is the slope
at the mean ID accuracy. The row ``all`` pools every optimizer of the condition.
A shape is flagged (``caveat``) when it says nothing: ``vacuous`` when every OOD accuracy lies
within 0.01 (e.g. all at a shortcut; the adaptive analysis's rule), ``one point decides`` when
leaving out some single trial changes the shape (a jackknife over the trials).
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import condition_columns, selected_checkpoints

LEVEL = 0.95
FLAT_OOD = 0.01  # an OOD range below this: the fit compares noise


@dataclass(frozen=True)
class OLSFit:
    """Least-squares coefficients, their covariance s^2 (X'X)^-1 and residual dof."""

    coef: np.ndarray
    cov: np.ndarray
    dof: int
    residuals: np.ndarray

    def interval(self, i: int, level: float = LEVEL) -> tuple[float, float]:
        """Two-sided t confidence interval of coefficient ``i``."""
        half = stats.t.ppf(0.5 + level / 2, self.dof) * np.sqrt(self.cov[i, i])
        return self.coef[i] - half, self.coef[i] + half

    def p_value(self, i: int) -> float:
        """Two-sided t-test of coefficient ``i`` = 0."""
        t = self.coef[i] / np.sqrt(self.cov[i, i])
        return float(2 * stats.t.sf(abs(t), self.dof))

    def band(self, design: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise confidence band of the fitted mean at the rows of ``design``."""
        fit = design @ self.coef
        se = np.sqrt(np.einsum("ij,jk,ik->i", design, self.cov, design))
        half = stats.t.ppf(0.5 + level / 2, self.dof) * se
        return fit - half, fit + half


def ols(design: np.ndarray, y: np.ndarray) -> OLSFit:
    """Ordinary least squares of ``y`` on the columns of ``design`` (full column rank)."""
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residuals = y - design @ coef
    dof = len(y) - design.shape[1]
    sigma2 = residuals @ residuals / dof
    return OLSFit(coef, sigma2 * np.linalg.inv(design.T @ design), dof, residuals)


def quadratic_design(x: np.ndarray, centre: float) -> np.ndarray:
    """Columns 1, (x - centre), (x - centre)^2."""
    d = x - centre
    return np.column_stack([np.ones_like(d), d, d**2])


def returns_shape(id_acc: np.ndarray, ood_acc: np.ndarray) -> dict:
    """The quadratic fit of OOD on ID and its classification (see the module docstring)."""
    n = len(id_acc)
    fit = ols(quadratic_design(id_acc, id_acc.mean()), ood_acc) if distinct(id_acc) else None
    if fit is None or not fit.cov[2, 2] > 0:
        nan = float("nan")
        return {"n": n, "slope": nan, "quad": nan, "quad_lo": nan, "quad_hi": nan} | {
            "shape": "undetermined"
        }
    lo, hi = fit.interval(2)
    shape = "increasing" if lo > 0 else "diminishing" if hi < 0 else "linear"
    return {"n": n, "slope": fit.coef[1], "quad": fit.coef[2], "quad_lo": lo, "quad_hi": hi} | {
        "shape": shape
    }


def caveat(id_acc: np.ndarray, ood_acc: np.ndarray, shape: str) -> str:
    """Why a fitted shape says nothing, or "" (see the module docstring)."""
    if np.ptp(ood_acc) < FLAT_OOD:
        return f"vacuous: every OOD accuracy within {np.ptp(ood_acc):.3f}"
    keep = np.ones(len(id_acc), bool)
    for i in range(len(id_acc)):
        keep[i] = False
        if returns_shape(id_acc[keep], ood_acc[keep])["shape"] != shape:
            return "one point decides"
        keep[i] = True
    return ""


def distinct(id_acc: np.ndarray, minimum: int = 4) -> bool:
    """Whether the ID accuracies take enough distinct values for a quadratic fit with lack of
    fit (at least 4)."""
    return len(np.unique(id_acc)) >= minimum


def trial_points(ledger: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every finished trial at its training-domain-selected checkpoint, and the condition
    columns."""
    picked = selected_checkpoints(schema.with_status(ledger, schema.DONE), "training_domain")
    return picked, condition_columns(picked) if not picked.empty else []


def run(context: AnalysisContext) -> None:
    points, condition = trial_points(context.ledger)
    if points.empty:
        context.report.text("No finished trials for the ID vs OOD fits.")
        return
    rows = []
    for key, group in points.groupby(condition, dropna=False):
        for solver, part in [*group.groupby("solver"), ("all", group)]:
            x, y = part["id_acc"].to_numpy(), part["ood_acc"].to_numpy()
            shape = returns_shape(x, y)
            flag = caveat(x, y, shape["shape"]) if shape["shape"] != "undetermined" else ""
            rows.append({**dict(zip(condition, key)), "solver": solver, **shape, "caveat": flag})
    table = pd.DataFrame(rows).rename(columns=lambda c: c.split(".", 1)[-1])
    context.report.table(
        "optimizer_ood_returns",
        table,
        "Shape of the ID to OOD returns per optimizer (quadratic OLS; linear if the 95% CI "
        "of the quadratic term contains 0, increasing if above, diminishing if below; caveat: "
        "vacuous when the OOD accuracies are flat, one point decides when leaving out one "
        "trial changes the shape)",
    )
    context.report.figure(
        "optimizer_ood_returns",
        _figure(points, condition),
        "ID vs OOD accuracy per optimizer with the fitted quadratic and its 95% band",
    )


def _figure(points: pd.DataFrame, condition: list[str]) -> plt.Figure:
    panels = list(points.groupby(condition, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.2), squeeze=False)
    solvers = sorted(points["solver"].unique())
    colours = dict(zip(solvers, plt.cm.tab10.colors))
    for ax, (key, panel) in zip(axes[0], panels):
        for solver, part in panel.groupby("solver"):
            x, y = part["id_acc"].to_numpy(), part["ood_acc"].to_numpy()
            ax.scatter(
                x,
                y,
                s=14,
                alpha=0.7,
                color=colours[solver],
                label=solver,
                urls=part["trial_id"].tolist(),  # the HTML site links each point to its trial
            )
            if returns_shape(x, y)["shape"] == "undetermined":
                continue
            fit = ols(quadratic_design(x, x.mean()), y)
            grid = np.linspace(x.min(), x.max(), 60)
            design = quadratic_design(grid, x.mean())
            lo, hi = fit.band(design)
            ax.plot(grid, design @ fit.coef, color=colours[solver], lw=1.2)
            ax.fill_between(grid, lo, hi, color=colours[solver], alpha=0.15)
        title = ", ".join(f"{c.split('.', 1)[-1]}={v}" for c, v in zip(condition[1:], key[1:]))
        ax.set(title=f"{key[0]}\n{title}", xlabel="ID accuracy", ylabel="OOD accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    return fig
