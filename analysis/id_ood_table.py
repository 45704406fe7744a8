"""ID and OOD accuracy per dataset and optimizer, best hyperparameters by training-domain
validation (DomainBed), mean ± std over seeds; one row per condition (dataset, test
environment and any other varying parameter such as the algorithm) and optimizer."""

from shiftbench.report import AnalysisContext
from shiftbench.selection import condition_columns, select


def run(context: AnalysisContext) -> None:
    table = select(context.ledger[context.ledger["status"] == "done"], "training_domain")
    if table.empty:
        context.report.text("No finished trials to tabulate.")
        return
    condition = [c.split(".", 1)[-1] for c in condition_columns(table)]
    shown = table.rename(columns=lambda c: c.split(".", 1)[-1])[
        [
            *condition,
            "solver",
            "id_acc_mean",
            "id_acc_std",
            "ood_acc_mean",
            "ood_acc_std",
            "oracle_acc_mean",
            "seeds",
            "label",
        ]
    ].sort_values([*condition, "ood_acc_mean"], ascending=[*(True,) * len(condition), False])
    context.report.table(
        "id_ood_table",
        shown,
        "ID vs OOD accuracy per optimizer (training-domain validation; mean and std over seeds)",
    )
