"""Slowdown % per rotation scope (extra steps to reach the unrotated run's final training
loss), mean and std over seeds, and the 95% interval over seeds of the mean final loss, per
task (data set and model) and optimizer; a verdict per task (the paper's ordering for Adam,
invariance for the equivariant controls) resting on paired intervals over seeds, said to be
vacuous where the comparison cannot tell; and the training and validation (held-out ID) loss
curves per scope."""

import matplotlib.pyplot as plt

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.adam_rotations.analysis import (
    CONFIDENCE,
    TIE,
    UNTRAINED,
    invariance_verdict,
    ordering_verdict,
    scope_label,
    seed_interval,
    slowdowns,
    sort_scopes,
    task_label,
)


def run(context: AnalysisContext) -> None:
    rows = schema.with_status(context.ledger, *schema.FINISHED)
    table = slowdowns(rows)
    if table.empty:
        context.report.text("No run has an unrotated baseline (`rotation: none`).")
        return
    keys = ["task", "solver", "seed", "scope"]
    half = slowdowns(rows, at=0.5).rename(columns={"slowdown_pct": "slowdown_half_pct"})
    table = table.merge(half[[*keys, "slowdown_half_pct"]], on=keys)
    summary = (
        table.groupby(["task", "solver", "scope"])[
            ["initial_loss", "final_loss", "slowdown_pct", "slowdown_half_pct"]
        ]
        .agg(["mean", "std"])
        .reset_index()
    )
    summary.columns = ["_".join(c).rstrip("_") for c in summary.columns]
    bounds = table.groupby(["task", "solver", "scope"])["final_loss"].apply(seed_interval)
    summary["final_loss_low"] = bounds.str[0].to_numpy()
    summary["final_loss_high"] = bounds.str[1].to_numpy()
    summary["seeds"] = table.groupby(["task", "solver", "scope"]).size().to_numpy()
    summary = sort_scopes(summary)
    context.report.table(
        "rotation_slowdown",
        summary,
        "Final training loss and slowdown % per rotation scope: steps to the unrotated run's "
        "final loss (slowdown_pct) and to its loss at half the budget (slowdown_half_pct); "
        f"final_loss_low/high: the {CONFIDENCE:.0%} Student-t interval of the mean over seeds",
    )
    verdicts = [
        f"- {task} ({solver}): "
        + (ordering_verdict(group) if solver.startswith("adam") else invariance_verdict(group))
        for (task, solver), group in table.groupby(["task", "solver"])
    ]
    context.report.text(
        "**Does the paper's ordering hold here?** Rule, on the final training loss of runs "
        "paired by seed (a seed draws the same initialization and data order in every scope): "
        f"each step of none ~ output <= input <= layer <= global is the mean difference over "
        f"seeds with its {CONFIDENCE:.0%} Student-t interval; a step is resolved when its "
        f"interval excludes 0 and its mean is more than {TIE} nats from 0. The ordering holds "
        "when no step is resolved the wrong way and output is not resolved worse than none "
        "(the verdict counts the steps resolved upward); SVD helps when svd - none is resolved "
        "below 0; a control matches none unless their difference is resolved. A comparison is "
        f"vacuous, and gets no verdict, when the unrotated run did not train (final loss >= "
        f"{UNTRAINED} x initial), when every scope saturated (all under {TIE} nats) or when "
        "all scopes tie. Rotation-equivariant controls (SGD) are checked for invariance.\n\n"
        + "\n".join(verdicts)
    )
    curves = rows[rows["step"] >= 0]
    curves = curves.assign(task=task_label(curves), scope=scope_label(curves))
    panels = sorted(curves.groupby(["task", "solver"]).groups)
    metrics = [m for m in ("train_loss", "id_loss") if m in curves]
    fig, axes = plt.subplots(
        len(metrics), len(panels), figsize=(4.5 * len(panels), 3.6 * len(metrics)), squeeze=False
    )
    for row, metric in zip(axes, metrics):
        for ax, (task, solver) in zip(row, panels):
            panel = curves[(curves["task"] == task) & (curves["solver"] == solver)]
            for scope in sort_scopes(panel.drop_duplicates("scope"))["scope"]:
                mean = panel[panel["scope"] == scope].groupby("step")[metric].mean()
                ax.plot(mean.index, mean.to_numpy(), label=scope)
            label = "training loss" if metric == "train_loss" else "validation (ID) loss"
            ax.set(title=f"{task} / {solver}", xlabel="step", ylabel=label, yscale="log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, title="rotation")
    context.report.figure(
        "rotation_curves",
        fig,
        "Training loss (top) and validation loss on the held-out ID split (bottom) per "
        "rotation scope (mean over seeds)",
    )
