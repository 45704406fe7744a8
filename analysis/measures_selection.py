"""Model selection by a measure (Nakai et al. 2026): pick the converged model the measure
ranks best (the lowest value, or the highest for a measure whose declared direction is -1,
`shiftbench.measures.core.Measure`) and score the pick against each target (gaps and shifted
errors) by the normalized regret (0 = the best model, 1 = the worst) and the top-20% hit
rate; then per measure and per measure family, the mean over the shifts, for the shifted
gap and the shifted error separately (one target per shift), with bootstrap intervals.

Resampling unit: the shift. Each shift is one selection episode over the same models, and
a claim of the form "this measure selects well under shift" is a claim about shifts, so
the intervals resample shifts (with few shifts they are wide, as they should be).
Resampling models within a shift would treat the shifts as fixed and give intervals that
are too narrow for that claim (the mistake rliable#20 describes for tasks and runs).
"""

from __future__ import annotations

import math

import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}


def scores(table: measure_table.MeasureTable, config: stats.ScoreConfig) -> pd.DataFrame:
    """Long table: measure, family, direction, target, regret, hit_rate over every target
    (NaN where fewer than two models have both values)."""
    models = table.models()
    rows = []
    for measure in table.measures:
        direction = measure_table.direction(measure)
        for target in table.targets:
            known = models[[measure, target]].dropna()
            regret = hit = math.nan
            if len(known) >= 2:
                regret = stats.normalized_regret(known, measure, target, direction=direction)
                hit = stats.top_k_hit_rate(
                    known, measure, target, config.top_frac, direction=direction
                )
            rows.append(
                {
                    "measure": measure,
                    "family": measure_table.family(measure),
                    "direction": direction,
                    "target": target,
                    "regret": regret,
                    "hit_rate": hit,
                }
            )
    return pd.DataFrame(rows)


def summary(
    long: pd.DataFrame, table: measure_table.MeasureTable, config: stats.ScoreConfig, by: str
) -> pd.DataFrame:
    """Per ``by`` (``measure`` or ``family``): the IID value and, for the shifted gap and
    the shifted error, the mean over the shifts with its bootstrap interval (over shifts);
    a family's value per target is the mean over its measures."""
    per_target = long.groupby([by, "target"], sort=False)[["regret", "hit_rate"]].mean()
    rows = []
    for key in long[by].drop_duplicates():
        row: dict = {by: measure_table.short(key) if by == "measure" else key}
        for value in ("regret", "hit_rate"):
            row[f"{value}_iid"] = per_target.loc[(key, "gap_iid"), value]
            for kind in ("gap", "err"):
                shifted = [per_target.loc[(key, f"{kind}_ood_{s}"), value] for s in table.shifts]
                lo, hi = stats.bootstrap_ci(
                    shifted, config.confidence, config.bootstrap, config.seed
                )
                row[f"{value}_{kind}_ood"] = pd.Series(shifted, dtype=float).mean()
                row[f"{value}_{kind}_ood_lo"], row[f"{value}_{kind}_ood_hi"] = lo, hi
        rows.append(row)
    return pd.DataFrame(rows)


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    if len(table.models()) < 2 or not table.measures:
        context.report.text("Selection: fewer than two converged models with measures.")
        return
    config = stats.ScoreConfig(**context.study.score_config)
    long = scores(table, config)
    for value, caption in (
        ("regret", "Normalized regret of the model each measure selects, per target"),
        ("hit_rate", f"Top-{config.top_frac:.0%} hit rate of the selected model, per target"),
    ):
        context.report.table(
            f"measures_{value}", measure_table.wide(long, value, table.targets), caption
        )
    level = f"{config.confidence:.0%}"
    context.report.text(
        "Selection summaries: the mean over the shifts of the regret and hit rate for the "
        "shifted gap (gap_ood) and, separately, the shifted error (err_ood), each shift "
        f"counted once, with {level} percentile-bootstrap intervals ({config.bootstrap} "
        "resamples) over the shifts, the independent selection episodes. A measure with "
        "direction -1 (larger value, smaller gap: the mean confidence) selects its highest "
        "value. Families average their measures per target."
    )
    context.report.table(
        "measures_selection_summary",
        summary(long, table, config, "measure"),
        f"Regret and hit rate per measure: IID, and mean over shifts [{level} interval]",
    )
    context.report.table(
        "measures_selection_families",
        summary(long, table, config, "family"),
        f"Regret and hit rate per measure family: IID, and mean over shifts [{level} interval]",
    )
