"""Slowdown % per rotation scope (extra steps to reach the unrotated run's final training
loss), mean and std over seeds, per task (data set and model) and optimizer; and the loss
curves per scope."""

import matplotlib.pyplot as plt

from shiftbench.report import AnalysisContext
from shiftbench.rotation_analysis import (
    SCOPE_ORDER,
    TIE,
    ordering_verdict,
    slowdowns,
    task_label,
)


def run(context: AnalysisContext) -> None:
    rows = context.ledger[context.ledger["status"].isin(["done", "diverged"])]
    table = slowdowns(rows)
    if table.empty:
        context.report.text("No run has an unrotated baseline (`rotation: none`).")
        return
    keys = ["task", "solver", "seed", "scope"]
    half = slowdowns(rows, at=0.5).rename(columns={"slowdown_pct": "slowdown_half_pct"})
    table = table.merge(half[[*keys, "slowdown_half_pct"]], on=keys)
    summary = (
        table.groupby(["task", "solver", "scope"])[
            ["final_loss", "slowdown_pct", "slowdown_half_pct"]
        ]
        .agg(["mean", "std"])
        .reset_index()
    )
    summary.columns = ["_".join(c).rstrip("_") for c in summary.columns]
    summary["seeds"] = table.groupby(["task", "solver", "scope"]).size().to_numpy()
    summary["order"] = summary["scope"].map({s: i for i, s in enumerate(SCOPE_ORDER)})
    summary = summary.sort_values(["task", "solver", "order"]).drop(columns="order")
    context.report.table(
        "rotation_slowdown",
        summary,
        "Final training loss and slowdown % per rotation scope: steps to the unrotated run's "
        "final loss (slowdown_pct) and to its loss at half the budget (slowdown_half_pct)",
    )
    verdicts = [
        f"- {task} ({solver}): {ordering_verdict(group)}"
        for (task, solver), group in summary.groupby(["task", "solver"])
        if solver.startswith("adam")
    ]
    context.report.text(
        "**Does the paper's ordering hold here?** Rule: no scope in none ~ output <= input "
        "<= layer <= global ends more than one pooled std of final loss below the scope "
        "before it (none and output within one std); SVD helps when its final loss is more "
        f"than one std below none's; differences under {TIE} nats are ties.\n\n"
        + "\n".join(verdicts)
    )
    curves = rows[rows["step"] >= 0]
    curves = curves.assign(task=task_label(curves))
    panels = sorted(curves.groupby(["task", "solver"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (task, solver) in zip(axes[0], panels):
        panel = curves[(curves["task"] == task) & (curves["solver"] == solver)]
        for scope in [s for s in SCOPE_ORDER if s in set(panel["hp.rotation"])]:
            mean = panel[panel["hp.rotation"] == scope].groupby("step")["train_loss"].mean()
            ax.plot(mean.index, mean.to_numpy(), label=scope)
        ax.set(title=f"{task} / {solver}", xlabel="step", ylabel="training loss", yscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="rotation")
    context.report.figure(
        "rotation_curves", fig, "Training loss per rotation scope (mean over seeds)"
    )
