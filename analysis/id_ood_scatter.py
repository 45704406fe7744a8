"""Scatter of ID accuracy vs OOD accuracy of every trial (checkpoint chosen by
training-domain validation), one panel per condition (dataset, test environment and any
other varying parameter such as the algorithm), one colour per optimizer. Each point carries
its trial id as its matplotlib URL, so the HTML site links it to the trial's page."""

import matplotlib.pyplot as plt

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import (
    METHODS,
    condition_columns,
    selected_checkpoints,
)


def run(context: AnalysisContext) -> None:
    done = schema.with_status(context.ledger, schema.DONE)
    picked = selected_checkpoints(done, METHODS["training_domain"])
    if picked.empty:
        return
    condition = condition_columns(picked)
    panels = list(picked.groupby(condition, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    solvers = sorted(picked["solver"].unique())
    colours = dict(zip(solvers, plt.cm.tab10.colors))
    for ax, (key, panel) in zip(axes[0], panels):
        for solver, points in panel.groupby("solver"):
            ax.scatter(
                points["id_acc"],
                points["ood_acc"],
                s=18,
                alpha=0.75,
                color=colours[solver],
                label=solver,
                urls=points["trial_id"].tolist(),
            )
        title = ", ".join(f"{c.split('.', 1)[-1]}={v}" for c, v in zip(condition[1:], key[1:]))
        ax.set(title=f"{key[0]}\n{title}", xlabel="ID accuracy", ylabel="OOD accuracy")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    context.report.figure("id_ood_scatter", fig, "ID vs OOD accuracy of every trial")
