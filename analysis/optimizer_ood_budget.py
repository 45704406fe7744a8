"""Best accuracy as a function of the trial budget, per condition and optimizer.

The budget counts hyperparameter samples in the order they were drawn (sample index), within
each trial seed, as DomainBed's selection works per trial seed (and its search draws the
samples anew per trial seed, ``search.hparams: per_seed``); each trial is scored by its
validation accuracy (``id_acc`` at the training-domain-selected checkpoint). At budget k:
``best_ood`` is the OOD accuracy of the sample with the best validation accuracy among the
first k (what a search of k trials would deliver), ``top10_ood`` the mean OOD accuracy of the
(up to) 10 best samples by validation accuracy among the first k, ``all_ood`` the mean OOD
accuracy of all k (the "all average" line of Naganuma et al.'s
``plot_status_by_trial_budget.ipynb``); each is then averaged over the trial seeds.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext

TOP = 10


def budget_curve(samples: pd.DataFrame, top: int = TOP) -> pd.DataFrame:
    """``samples`` (columns sample, val, ood; one row per sample) -> one row per budget."""
    ordered = samples.sort_values("sample").reset_index(drop=True)
    rows = []
    for k in range(1, len(ordered) + 1):
        ranked = ordered.iloc[:k].sort_values(["val", "sample"], ascending=[False, True])
        rows.append(
            {
                "budget": k,
                "best_ood": ranked["ood"].iloc[0],
                "top10_ood": ranked["ood"][:top].mean(),
                "all_ood": ranked["ood"].mean(),
            }
        )
    return pd.DataFrame(rows)


def curves(ledger: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Budget curves of every condition and solver."""
    points, condition = registry.analysis("optimizer_ood_returns").trial_points(ledger)
    if points.empty:
        return pd.DataFrame(), condition
    group = [*condition, "solver"]
    samples = points.rename(columns={"val_score": "val", "ood_acc": "ood"})
    parts = [
        budget_curve(part).assign(**dict(zip([*group, "seed"], key)))
        for key, part in samples.groupby([*group, "seed"], dropna=False)
    ]
    per_seed = pd.concat(parts, ignore_index=True)
    table = (
        per_seed.groupby([*group, "budget"], dropna=False)[["best_ood", "top10_ood", "all_ood"]]
        .mean()
        .reset_index()
    )
    return table, condition


def run(context: AnalysisContext) -> None:
    table, condition = curves(context.ledger)
    if table.empty:
        context.report.text("No finished trials for the budget curves.")
        return
    largest = table.groupby([*condition, "solver"], dropna=False)["budget"].transform("max")
    shown = table[
        (table["budget"] == 1)
        | (table["budget"] == (largest + 1) // 2)
        | (table["budget"] == largest)
    ]
    context.report.table(
        "optimizer_ood_budget",
        shown.rename(columns=lambda c: c.split(".", 1)[-1]),
        "OOD accuracy of the search's pick (best validation), mean of the top-10 samples and "
        "mean of all samples after 1, half and all of the trial budget",
    )
    panels = list(table.groupby(condition, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    solvers = sorted(table["solver"].unique())
    colours = dict(zip(solvers, plt.cm.tab10.colors))
    for ax, (key, panel) in zip(axes[0], panels):
        for solver, part in panel.groupby("solver"):
            ax.plot(
                part["budget"], part["best_ood"], "o-", ms=3, color=colours[solver], label=solver
            )
            ax.plot(part["budget"], part["top10_ood"], color=colours[solver], ls="--", lw=0.9)
            ax.plot(part["budget"], part["all_ood"], color=colours[solver], ls=":", lw=0.9)
        ax.set(
            title=" ".join(str(k) for k in key),
            xlabel="trial budget (samples)",
            ylabel="OOD accuracy",
        )
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    context.report.figure(
        "optimizer_ood_budget",
        fig,
        "OOD accuracy vs trial budget: the search's pick (solid), the top-10 mean (dashed) and "
        "the mean of all trials (dotted)",
    )
