"""DomainBed's results table per dataset and optimizer: the test environment's in-split accuracy
(``test_in_acc``, the number DomainBed reports) under training-domain validation,
leave-one-domain-out (when the study has its companion runs) and the oracle, DomainBed's
protocol (the sample chosen per trial seed) and error bar; beside it, under training-domain
validation, the ID accuracy, the whole test environment's accuracy (``ood_acc``) and Naganuma
et al.'s ``avg_test_acc``. One row per condition (dataset, test environment and any other
varying parameter such as the algorithm) and optimizer."""

import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import (
    ERROR_BAR,
    METHODS,
    by_method,
    condition_columns,
    select,
)


def run(context: AnalysisContext) -> None:
    done = schema.with_status(context.ledger, schema.DONE)
    table = by_method(done)
    if table.empty:
        context.report.text("No finished trials to tabulate.")
        return
    keys = [*condition_columns(table), "solver"]
    training = select(done, "training_domain", metrics=("id_acc", "ood_acc", "avg_test_acc"))
    extra = ["id_acc_mean", "ood_acc_mean", "avg_test_acc_mean", "sample"]
    table = table.merge(training[[*keys, *extra]], on=keys, how="left")
    methods = [m for m in METHODS if m in table]
    condition = [c.split(".", 1)[-1] for c in keys[:-1]]
    shown = table.rename(columns=lambda c: c.split(".", 1)[-1])[
        [
            *condition,
            "solver",
            *(c for m in methods for c in (m, f"{m}_err")),
            *extra[:-1],
            "seeds",
            "sample",
        ]
    ].sort_values([*condition, "training_domain"], ascending=[*(True,) * len(condition), False])
    context.report.table(
        "id_ood_table",
        shown,
        "Test-environment accuracy per optimizer, DomainBed's protocol: env<t>_in_acc under "
        f"each selection method ({ERROR_BAR}); id_acc, ood_acc (whole test environment) and "
        "avg_test_acc (Naganuma et al.) are means under training-domain validation; sample: "
        "the hyperparameter sample chosen in each trial seed",
    )
    context.report.text(untrained(context.ledger, keys))


def untrained(ledger: pd.DataFrame, keys: list[str]) -> str:
    """A line per condition and solver absent from the table: no trial finished (all diverged
    or failed), so the table cannot rank it."""
    status = ledger.groupby(keys, dropna=False)["status"].agg(lambda s: (s == schema.DONE).any())
    missing = status[~status]
    if missing.empty:
        return "Every optimizer has finished trials in every condition."
    lines = ["Absent from the table (no trial finished: every one diverged or failed):", ""]
    for key in missing.index:
        lines.append("- " + ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in zip(keys, key)))
    return "\n".join(lines)
