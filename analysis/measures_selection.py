"""Model selection by a measure (Nakai et al. 2026): pick the converged model with the lowest
measure value and score the pick against each target (gaps and shifted errors) by the
normalized regret (0 = the best model, 1 = the worst) and the top-20% hit rate."""

from __future__ import annotations

import math

import pandas as pd

from shiftbench import measure_table, stats
from shiftbench.report import AnalysisContext

TOP = 0.2


def scores(table: measure_table.MeasureTable) -> pd.DataFrame:
    """Long table: measure, target, regret, hit_rate over every target (NaN where fewer
    than two models have both values: a measure undefined everywhere selects nothing)."""
    models = table.models()
    rows = []
    for measure in table.measures:
        for target in table.targets:
            known = models[[measure, target]].dropna()
            regret = hit = math.nan
            if len(known) >= 2:
                regret = stats.normalized_regret(known, measure, target)
                hit = stats.top_k_hit_rate(known, measure, target, TOP)
            rows.append({"measure": measure, "target": target, "regret": regret, "hit_rate": hit})
    return pd.DataFrame(rows)


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    if len(table.models()) < 2 or not table.measures:
        context.report.text("Selection: fewer than two converged models with measures.")
        return
    long = scores(table)
    for value, caption in (
        ("regret", "Normalized regret of the lowest-measure model, per target"),
        ("hit_rate", f"Top-{TOP:.0%} hit rate of the lowest-measure model, per target"),
    ):
        frame = measure_table.wide(long, value, table.targets)
        frame.insert(1, "mean", frame.drop(columns="measure").mean(axis=1))
        context.report.table(f"measures_{value}", frame, caption)
