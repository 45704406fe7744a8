"""Slowdown % per rotation scope (extra steps to reach the unrotated run's final training
loss), mean and std over seeds, per task and optimizer; and the loss curves per scope."""

import matplotlib.pyplot as plt

from shiftbench.report import AnalysisContext
from shiftbench.rotation_analysis import slowdowns

SCOPE_ORDER = ["none", "output", "input", "layer", "global", "svd"]


def run(context: AnalysisContext) -> None:
    rows = context.ledger[context.ledger["status"].isin(["done", "diverged"])]
    table = slowdowns(rows)
    if table.empty:
        context.report.text("No run has an unrotated baseline (`rotation: none`).")
        return
    summary = (
        table.groupby(["dataset", "solver", "scope"])["slowdown_pct"]
        .agg(["mean", "std", "count"])
        .reset_index()
        .rename(columns={"mean": "slowdown_pct_mean", "std": "slowdown_pct_std", "count": "seeds"})
    )
    summary["order"] = summary["scope"].map({s: i for i, s in enumerate(SCOPE_ORDER)})
    summary = summary.sort_values(["dataset", "solver", "order"]).drop(columns="order")
    context.report.table(
        "rotation_slowdown",
        summary,
        "Slowdown % per rotation scope (steps to the unrotated final loss)",
    )
    curves = rows[rows["step"] >= 0]
    panels = sorted(curves.groupby(["dataset", "solver"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, solver) in zip(axes[0], panels):
        panel = curves[(curves["dataset"] == dataset) & (curves["solver"] == solver)]
        for scope in [s for s in SCOPE_ORDER if s in set(panel["hp.rotation"])]:
            mean = panel[panel["hp.rotation"] == scope].groupby("step")["train_loss"].mean()
            ax.plot(mean.index, mean.to_numpy(), label=scope)
        ax.set(title=f"{dataset} / {solver}", xlabel="step", ylabel="training loss", yscale="log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, title="rotation")
    context.report.figure(
        "rotation_curves", fig, "Training loss per rotation scope (mean over seeds)"
    )
