"""Best OOD accuracy per condition and optimizer under each model-selection method
(training-domain validation, leave-one-domain-out, oracle), DomainBed's protocol: the
hyperparameter sample is chosen within each trial seed, and the chosen OOD accuracy is
reported as mean and standard error (sample std / sqrt(seeds)) over seeds. Leave-one-domain-
out appears only when the study holds its companion runs (see ``shiftbench.selection``).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report import AnalysisContext
from shiftbench.selection import METHODS, select

KEYS = ("dataset", "solver")


def best_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """One row per condition and solver; ``<method>_ood`` and ``<method>_se`` columns."""
    done = ledger[ledger["status"] == "done"]
    merged = None
    for name in METHODS:
        chosen = select(done, name, metrics=("ood_acc",), per_seed=True)
        if chosen.empty:
            continue
        keys = [c for c in chosen.columns if c.startswith(("ds.", "obj.")) or c in KEYS]
        part = chosen[keys].assign(
            **{f"{name}_ood": chosen["ood_acc_mean"], f"{name}_se": chosen["ood_acc_se"]},
            seeds=chosen["seeds"],
        )
        merged = part if merged is None else merged.merge(part, on=[*keys, "seeds"], how="outer")
    if merged is None:
        return pd.DataFrame()
    seeds = merged.pop("seeds")
    return merged.assign(seeds=seeds).rename(columns=lambda c: c.split(".", 1)[-1])


def run(context: AnalysisContext) -> None:
    table = best_table(context.ledger)
    if table.empty:
        context.report.text("No finished trials to select from.")
        return
    context.report.table(
        "optimizer_ood_best",
        table,
        "Best OOD accuracy per optimizer under each selection method (sample chosen per seed; "
        "mean and standard error over seeds)",
    )
    if "leave_one_domain_out_ood" not in table:
        context.report.text(
            "Leave-one-domain-out selection is absent: the study has no companion runs "
            "(each training environment held out in turn, `ds.val_env`)."
        )
    context.report.figure(
        "optimizer_ood_best", _figure(table), "Best OOD accuracy per optimizer (mean ± SE)"
    )


def _figure(table: pd.DataFrame) -> plt.Figure:
    methods = [m for m in METHODS if f"{m}_ood" in table]
    condition = [
        c
        for c in table.columns
        if c not in {"solver", "seeds"} and not c.endswith(("_ood", "_se"))
    ]
    panels = list(table.groupby(condition, dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False)
    width = 0.8 / len(methods)
    for ax, (key, panel) in zip(axes[0], panels):
        x = np.arange(len(panel))
        for i, method in enumerate(methods):
            ax.bar(
                x + i * width,
                panel[f"{method}_ood"],
                width,
                yerr=panel[f"{method}_se"],
                label=method,
                capsize=2,
            )
        ax.set_xticks(x + width * (len(methods) - 1) / 2, panel["solver"], rotation=45)
        ax.set(title=" ".join(str(k) for k in key), ylabel="OOD accuracy")
        ax.grid(alpha=0.3, axis="y")
    axes[0][-1].legend(fontsize=8, loc="best")
    return fig
