"""Best test-environment accuracy per condition and optimizer under each model-selection method
(training-domain validation, leave-one-domain-out, oracle), DomainBed's protocol: the
hyperparameter sample is chosen within each trial seed, and the chosen ``test_in_acc`` (the
test environment's in-split, DomainBed's reported number) is given as mean and DomainBed's error
bar over trial seeds. Leave-one-domain-out appears only when the study holds its companion runs
(see ``shiftbench.studies.optimizer_ood.selection``). ``max_ood`` is the best achievable OOD
accuracy, as Naganuma et al. report it: the maximum ``test_in_acc`` over every checkpoint of
every trial (no selection).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import (
    ERROR_BAR,
    METHODS,
    by_method,
    condition_columns,
    main_runs,
    with_test_metrics,
)


def best_table(ledger: pd.DataFrame) -> pd.DataFrame:
    """One row per condition and solver; ``<method>_ood``, ``<method>_err`` and ``max_ood``."""
    done = schema.with_status(ledger, schema.DONE)
    table = by_method(done)
    if table.empty:
        return table
    rows = with_test_metrics(main_runs(done))
    keys = [*condition_columns(rows), "solver"]
    achievable = rows.groupby(keys, dropna=False)["test_in_acc"].max().rename("max_ood")
    table = table.merge(achievable.reset_index(), on=keys, how="left")
    renamed = table.rename(columns={m: f"{m}_ood" for m in METHODS})
    return renamed.rename(columns=lambda c: c.split(".", 1)[-1])


def run(context: AnalysisContext) -> None:
    table = best_table(context.ledger)
    if table.empty:
        context.report.text("No finished trials to select from.")
        return
    context.report.table(
        "optimizer_ood_best",
        table,
        "Best OOD accuracy (test environment's in-split) per optimizer under each selection "
        f"method (sample chosen per trial seed; {ERROR_BAR}); max_ood: the best achievable, "
        "the maximum over every checkpoint of every trial",
    )
    if "leave_one_domain_out_ood" not in table:
        context.report.text(
            "Leave-one-domain-out selection is absent: the study has no companion runs "
            "(each training environment held out in turn, `ds.val_env`)."
        )
    context.report.figure(
        "optimizer_ood_best",
        _figure(table),
        "Best OOD accuracy per optimizer (mean ± DomainBed's error bar)",
    )


def _figure(table: pd.DataFrame) -> plt.Figure:
    methods = [m for m in METHODS if f"{m}_ood" in table]
    condition = [
        c
        for c in table.columns
        if c not in {"solver", "seeds", "max_ood"} and not c.endswith(("_ood", "_err"))
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
                yerr=panel[f"{method}_err"],
                label=method,
                capsize=2,
            )
        ax.set_xticks(x + width * (len(methods) - 1) / 2, panel["solver"], rotation=45)
        ax.set(title=" ".join(str(k) for k in key), ylabel="OOD accuracy")
        ax.grid(alpha=0.3, axis="y")
    axes[0][-1].legend(fontsize=8, loc="best")
    return fig
