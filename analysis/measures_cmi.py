"""Conditional mutual information K (Jiang et al. 2020, Eq. 4-5) of every measure with the
generalization gap, IID and under each shift, over the converged models: the information
about the gap's ordering that no set of at most two hyperparameters explains away."""

from __future__ import annotations

import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats


def scores(table: measure_table.MeasureTable) -> pd.DataFrame:
    """Long table: measure, target, k. A grid left incomplete by unconverged models is
    scored as it is (the completeness check is reported, not enforced)."""
    models = table.models()
    rows = [
        {
            "measure": measure,
            "target": target,
            "k": stats.conditional_mi(
                models, measure, target, table.hparams, require_complete=False
            ).k,
        }
        for measure in table.measures
        for target in table.gap_targets
    ]
    return pd.DataFrame(rows)


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    if len(table.models()) < 2 or not table.measures:
        context.report.text("Conditional MI: fewer than two converged models with measures.")
        return
    try:
        stats.check_full_factorial(table.models(), table.hparams)
    except ValueError as exc:
        context.report.text(f"Conditional MI caveat: {exc}.")
    context.report.table(
        "measures_cmi",
        measure_table.wide(scores(table), "k", table.gap_targets),
        "Conditional mutual information K of each measure with the gap (min over |S| <= 2)",
    )
