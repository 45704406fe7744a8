"""ID and OOD accuracy per dataset and optimizer, best hyperparameters by training-domain
validation (DomainBed), mean ± std over seeds."""

from shiftbench.report import AnalysisContext
from shiftbench.selection import select


def run(context: AnalysisContext) -> None:
    table = select(context.ledger[context.ledger["status"] == "done"], "training_domain")
    if table.empty:
        context.report.text("No finished trials to tabulate.")
        return
    shown = table.rename(columns={"ds.test_env": "test_env"})[
        [
            "dataset",
            "test_env",
            "solver",
            "id_acc_mean",
            "id_acc_std",
            "ood_acc_mean",
            "ood_acc_std",
            "oracle_acc_mean",
            "seeds",
            "label",
        ]
    ].sort_values(["dataset", "test_env", "ood_acc_mean"], ascending=[True, True, False])
    context.report.table(
        "id_ood_table",
        shown,
        "ID vs OOD accuracy per optimizer (training-domain validation; mean and std over seeds)",
    )
