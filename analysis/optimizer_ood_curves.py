"""Training curves aggregated over trials, per condition and optimizer: does the ID spread come
from the hyperparameters or from unfinished training?

Every finished main run (leave-one-domain-out companions left out) contributes its curve: ID
accuracy (``id_acc``, the training environments' held-out 20%), OOD accuracy (``ood_acc``, the
whole test environment), training loss and OOD loss at each checkpoint. The figure draws, per
optimizer, the median over its trials at each step and the band between the 25th and 75th
percentiles (the issue's "median and band over trials").

The table sets two numbers side by side per condition and optimizer: the spread of the final ID
accuracy across trials (interquartile range, IQR) and how much a trial still gained over the
last fifth of its training (``late_gain``: final ID accuracy minus that at the first checkpoint
at or after 80% of the steps; its median and 90th percentile over trials, and the share of
trials that gained more than 0.01). Verdict per condition, over all its trials: ``spread from
hyperparameters`` when the median late gain is under a quarter of the IQR (training has
levelled off, so the spread is between settings), ``training unfinished`` otherwise, and
``vacuous`` when the IQR is under 0.01 (no spread to explain, e.g. every trial at a shortcut).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.optimizer_ood.selection import condition_columns, main_runs

PANELS = (
    ("id_acc", "ID accuracy"),
    ("ood_acc", "OOD accuracy"),
    ("train_loss", "training loss"),
    ("ood_loss", "OOD loss"),
)
LATE = 0.8  # the last fifth of training
GAINING = 0.01  # a trial still gaining more than this over the last fifth
FLAT = 0.01  # an IQR below this: no ID spread to explain
LEVELLED = 0.25  # median late gain below this fraction of the IQR: levelled off


def trial_curves(ledger: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every checkpoint of every finished main run, and the condition columns."""
    rows = main_runs(ledger[ledger["status"] == "done"])
    if rows.empty:
        return rows, []
    return rows, condition_columns(rows)


def late_gains(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trial: its final ID accuracy and its gain over the last fifth of its steps."""
    rows = []
    for trial_id, curve in curves.groupby("trial_id"):
        curve = curve.dropna(subset=["id_acc"]).sort_values("step")
        if curve.empty:
            continue
        late = curve[curve["step"] >= LATE * curve["step"].iloc[-1]]
        final = curve["id_acc"].iloc[-1]
        rows.append(
            {"trial_id": trial_id, "id_final": final, "late_gain": final - late["id_acc"].iloc[0]}
        )
    return pd.DataFrame(rows, columns=["trial_id", "id_final", "late_gain"])


def summary(gains: pd.DataFrame) -> dict[str, float | int]:
    """The table's numbers for one group of trials (:func:`late_gains` rows)."""
    final, gain = gains["id_final"], gains["late_gain"]
    return {
        "trials": len(gains),
        "id_final_median": final.median(),
        "id_final_iqr": final.quantile(0.75) - final.quantile(0.25),
        "late_gain_median": gain.median(),
        "late_gain_p90": gain.quantile(0.9),
        "still_gaining": float((gain > GAINING).mean()),
    }


def verdict(row: dict[str, float | int]) -> str:
    """The module docstring's rule on one :func:`summary`."""
    if row["id_final_iqr"] < FLAT:
        return f"vacuous: final ID accuracies within {FLAT} (IQR {row['id_final_iqr']:.3f})"
    if row["late_gain_median"] < LEVELLED * row["id_final_iqr"]:
        return "spread from hyperparameters"
    return "training unfinished"


def run(context: AnalysisContext) -> None:
    curves, condition = trial_curves(context.ledger)
    if curves.empty:
        context.report.text("No finished trials for the training curves.")
        return
    gains = late_gains(curves).merge(
        curves.drop_duplicates("trial_id")[["trial_id", *condition, "solver"]], on="trial_id"
    )
    rows = []
    for key, part in gains.groupby(condition, dropna=False):
        for solver, trials in [*part.groupby("solver"), ("all", part)]:
            row = {**dict(zip(condition, key)), "solver": solver, **summary(trials)}
            rows.append({**row, "verdict": verdict(row) if solver == "all" else ""})
    context.report.table(
        "optimizer_ood_curves",
        pd.DataFrame(rows).rename(columns=lambda c: c.split(".", 1)[-1]),
        f"Final ID accuracy spread across trials (IQR) against the gain over the last "
        f"{1 - LATE:.0%} of training (late_gain: median, 90th percentile, share of trials "
        f"gaining more than {GAINING}); verdict on all trials of a condition: spread from "
        f"hyperparameters when the median late gain is under {LEVELLED} x the IQR, vacuous "
        f"when the IQR is under {FLAT}",
    )
    context.report.figure(
        "optimizer_ood_curves",
        _figure(curves, condition),
        "Training curves per optimizer: median over trials (line) and 25th-75th percentile "
        "band, at every checkpoint",
    )


def _figure(curves: pd.DataFrame, condition: list[str]) -> plt.Figure:
    panels = list(curves.groupby(condition, dropna=False))
    metrics = [(metric, label) for metric, label in PANELS if metric in curves]
    solvers = sorted(curves["solver"].unique())
    colours = dict(zip(solvers, plt.cm.tab10.colors))
    fig, axes = plt.subplots(
        len(metrics),
        len(panels),
        figsize=(4.2 * len(panels), 2.6 * len(metrics)),
        squeeze=False,
        sharex="col",
        layout="constrained",
    )
    for col, (key, panel) in enumerate(panels):
        axes[0, col].set_title(" ".join(str(k) for k in key), fontsize=9)
        for row, (metric, label) in enumerate(metrics):
            ax = axes[row, col]
            for solver, part in panel.groupby("solver"):
                by_step = part.groupby("step")[metric]
                steps = np.asarray(sorted(part["step"].unique()))
                low, mid, high = (by_step.quantile(q).reindex(steps) for q in (0.25, 0.5, 0.75))
                ax.plot(steps, mid, color=colours[solver], lw=1.2, label=solver)
                ax.fill_between(steps, low, high, color=colours[solver], alpha=0.15, lw=0)
            ax.set_ylabel(label, fontsize=8)
            if metric.endswith("loss"):
                ax.set_yscale("log")
        axes[-1, col].set_xlabel("step")
    axes[0, -1].legend(fontsize=7)
    return fig
