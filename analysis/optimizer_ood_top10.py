"""The 10 trials with the highest validation accuracy per condition and optimizer: their ID
and OOD accuracy, mean and standard error (sample std / sqrt(n)) over those trials, and a box
plot of their OOD accuracy. A trial is one (hyperparameter sample, seed) run at its
training-domain-selected checkpoint; validation accuracy is ``id_acc`` there. Fewer than 10
trials: all of them. A second figure shows every trial's OOD accuracy per optimizer as
violins (the paper's plots over all trials).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext

TOP = 10


def top_trials(points: pd.DataFrame, condition: list[str], top: int = TOP) -> pd.DataFrame:
    """The ``top`` trials by validation accuracy per condition and solver."""
    ranked = points.sort_values(["val_score", "trial_id"], ascending=[False, True])
    return ranked.groupby([*condition, "solver"], dropna=False).head(top)


def summarise(top: pd.DataFrame, condition: list[str]) -> pd.DataFrame:
    """Mean and standard error of ID and OOD accuracy over each group's top trials."""

    def se(values: pd.Series) -> float:
        return values.std() / np.sqrt(len(values))

    return (
        top.groupby([*condition, "solver"], dropna=False)
        .agg(
            n=("trial_id", "size"),
            id_acc_mean=("id_acc", "mean"),
            id_acc_se=("id_acc", se),
            ood_acc_mean=("ood_acc", "mean"),
            ood_acc_se=("ood_acc", se),
        )
        .reset_index()
    )


def run(context: AnalysisContext) -> None:
    points, condition = registry.analysis("optimizer_ood_returns").trial_points(context.ledger)
    if points.empty:
        context.report.text("No finished trials to rank.")
        return
    top = top_trials(points, condition)
    context.report.table(
        "optimizer_ood_top10",
        summarise(top, condition).rename(columns=lambda c: c.split(".", 1)[-1]),
        f"Top-{TOP} trials by validation accuracy per optimizer: mean and standard error of "
        "their ID and OOD accuracy",
    )
    context.report.figure(
        "optimizer_ood_top10",
        _distributions(top, condition),
        f"OOD accuracy of the top-{TOP} trials per optimizer (box plots)",
    )
    context.report.figure(
        "optimizer_ood_all_trials",
        _distributions(points, condition, violin=True),
        "OOD accuracy of every trial per optimizer (violins; checkpoint chosen by "
        "training-domain validation), as the paper's all-trials plots",
    )


def _distributions(points: pd.DataFrame, condition: list[str], violin: bool = False) -> plt.Figure:
    """One panel per condition: OOD accuracy per optimizer, as box plots or violins."""
    panels = list(points.groupby(condition, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    for ax, (key, panel) in zip(axes[0], panels):
        solvers = sorted(panel["solver"].unique())
        values = [panel.loc[panel["solver"] == s, "ood_acc"] for s in solvers]
        if violin:
            ax.violinplot(values, showmedians=True)
        else:
            ax.boxplot(values)
        ax.set_xticks(range(1, len(solvers) + 1), solvers, rotation=45)
        ax.set(title=" ".join(str(k) for k in key), ylabel="OOD accuracy")
        ax.grid(alpha=0.3, axis="y")
    return fig
