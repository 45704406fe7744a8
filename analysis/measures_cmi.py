"""Conditional mutual information K (Jiang et al. 2020, Eq. 4-5) of every measure with the
generalization gap, IID and under each shift, over the converged models: the information
about the gap's ordering that no set of at most two hyperparameters explains away, with
jackknife intervals over the seeds."""

from __future__ import annotations

import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}


def scores(
    table: measure_table.MeasureTable, config: stats.ScoreConfig | None = None
) -> pd.DataFrame:
    """Long table: measure, target, k and its jackknife interval over the seeds (k_lo, k_hi;
    `shiftbench.stats.jackknife_ci`: K counts ordered pairs of distinct models, which a
    bootstrap over models would duplicate into ties). A grid left incomplete by unconverged
    models is scored as it is (the completeness check is reported, not enforced)."""
    config = config or stats.ScoreConfig()
    models = table.models()
    rows = []
    for measure in table.measures:
        for target in table.gap_targets:

            def k(d: pd.DataFrame, measure: str = measure, target: str = target) -> float:
                return stats.conditional_mi(
                    d, measure, target, table.hparams, require_complete=False
                ).k

            lo, hi = stats.jackknife_ci(models, k, confidence=config.confidence)
            rows.append(
                {"measure": measure, "target": target, "k": k(models), "k_lo": lo, "k_hi": hi}
            )
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
    config = stats.ScoreConfig(**context.study.score_config)
    long = scores(table, config)
    context.report.table(
        "measures_cmi",
        measure_table.wide(long, "k", table.gap_targets),
        "Conditional mutual information K of each measure with the gap (min over |S| <= 2)",
    )
    context.report.table(
        "measures_cmi_intervals",
        long.assign(measure=long["measure"].map(measure_table.short)),
        f"Conditional mutual information K with its {config.confidence:.0%} jackknife interval "
        "over seeds, per measure and target",
    )
