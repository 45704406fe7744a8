"""Naganuma et al.'s "reliability diagrams" of ID vs OOD accuracy, per condition and optimizer.

As the authors' ``jupyter/domainbed/plot_reliable_diag.ipynb`` draws them: every finished trial
at its final checkpoint (the W&B run summary the notebook reads) is put in one of ten ID-accuracy
bins ``(j/10, (j+1)/10)`` by ``id_acc`` (their ``avg_val_acc``; both bounds strict, so a trial
exactly on a bound is in no bin, as in the notebook), and each bin shows the mean OOD accuracy
``avg_test_acc`` of its trials. Bars under the diagonal: OOD accuracy below ID accuracy.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import (
    condition_columns,
    main_runs,
    with_test_metrics,
)

BINS = 10


def final_points(ledger: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every finished main run at its last checkpoint, and the condition columns."""
    rows = with_test_metrics(main_runs(schema.with_status(ledger, schema.DONE)))
    if rows.empty:
        return rows, []
    last = rows.loc[rows.groupby("trial_id")["step"].idxmax()]
    return last, condition_columns(last)


def reliability(points: pd.DataFrame, bins: int = BINS) -> pd.DataFrame:
    """One row per ID bin holding a trial: its bounds, trial count and mean OOD accuracy."""
    rows = []
    for j in range(bins):
        lower, upper = j / bins, (j + 1) / bins
        inside = points[(points["id_acc"] > lower) & (points["id_acc"] < upper)]
        if len(inside):
            rows.append(
                {
                    "lower": lower,
                    "upper": upper,
                    "n": len(inside),
                    "ood_mean": inside["avg_test_acc"].mean(),
                }
            )
    return pd.DataFrame(rows, columns=["lower", "upper", "n", "ood_mean"])


def run(context: AnalysisContext) -> None:
    points, condition = final_points(context.ledger)
    if points.empty:
        context.report.text("No finished trials for the reliability diagrams.")
        return
    group = [*condition, "solver"]
    parts = [
        reliability(part).assign(**dict(zip(group, key)))
        for key, part in points.groupby(group, dropna=False)
    ]
    table = pd.concat(parts, ignore_index=True)[[*group, "lower", "upper", "n", "ood_mean"]]
    panels = list(table.groupby(condition, dropna=False))
    solvers = sorted(table["solver"].unique())
    context.report.table(
        "optimizer_ood_reliability",
        table.rename(columns=lambda c: c.split(".", 1)[-1]),
        "Reliability diagrams (Naganuma et al.): trials at their last checkpoint binned by ID "
        "accuracy, mean OOD accuracy (avg_test_acc) per bin",
    )
    fig, axes = plt.subplots(
        len(panels),
        len(solvers),
        figsize=(2.4 * len(solvers), 2.4 * len(panels)),
        squeeze=False,
        layout="constrained",
    )
    for row, (key, panel) in zip(axes, panels):
        for ax, solver in zip(row, solvers):
            part = panel[panel["solver"] == solver]
            ax.bar(part["lower"] + 0.5 / BINS, part["ood_mean"], width=1 / BINS, edgecolor="k")
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 1), xticks=np.linspace(0, 1, 3), yticks=[0, 0.5, 1])
            ax.set_title(f"{' '.join(str(k) for k in key)} {solver}", fontsize=7)
    fig.supxlabel("ID accuracy (bin)")
    fig.supylabel("mean OOD accuracy")
    context.report.figure(
        "optimizer_ood_reliability",
        fig,
        "Reliability diagrams per optimizer: mean OOD accuracy of the trials in each ID bin "
        "(dashed: OOD = ID)",
    )
