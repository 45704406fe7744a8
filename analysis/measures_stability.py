"""Stability of each measure's Kendall tau across shifts: its tau with the IID gap, the mean,
standard deviation and range of its tau with the shifted gaps, and the change from IID to
the mean shift. A measure whose ranking of models holds under every shift has a small
spread; the report names the most and least stable measures. The IID tau and the mean tau
over the shifts come with jackknife intervals over the seeds (`shiftbench.stats.jackknife_ci`;
the seed is what varies between reruns of a fixed grid)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}

NAMED = 5
"""How many most and least stable measures the report names."""
INFORMATIVE = 0.2
"""|mean tau over the shifts| from which a stable measure is also called informative."""


def stability(
    table: measure_table.MeasureTable, config: stats.ScoreConfig | None = None
) -> pd.DataFrame:
    """One row per measure with a defined tau under at least two shifts, sorted by spread
    (the standard deviation of tau over the shifts), smallest first."""
    config = config or stats.ScoreConfig()
    models = table.models()
    shifted = table.gap_targets[1:]
    rows = []
    for measure in table.measures:
        taus = pd.Series([stats.kendall_tau(models, measure, t) for t in shifted]).dropna()
        if len(taus) < 2:
            continue
        iid = stats.kendall_tau(models, measure, "gap_iid")
        iid_lo, iid_hi = stats.jackknife_ci(
            models,
            lambda d, m=measure: stats.kendall_tau(d, m, "gap_iid"),
            confidence=config.confidence,
        )
        shift_lo, shift_hi = stats.jackknife_ci(
            models,
            lambda d, m=measure: float(np.nanmean([stats.kendall_tau(d, m, t) for t in shifted])),
            confidence=config.confidence,
        )
        rows.append(
            {
                "measure": measure_table.short(measure),
                "tau_iid": iid,
                "tau_iid_lo": iid_lo,
                "tau_iid_hi": iid_hi,
                "tau_shift_mean": taus.mean(),
                "tau_shift_mean_lo": shift_lo,
                "tau_shift_mean_hi": shift_hi,
                "tau_shift_std": taus.std(),
                "tau_shift_min": taus.min(),
                "tau_shift_max": taus.max(),
                "iid_minus_shift_mean": iid - taus.mean(),
            }
        )
    frame = pd.DataFrame(rows)
    return frame.sort_values("tau_shift_std", kind="stable") if rows else frame


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    config = stats.ScoreConfig(**context.study.score_config)
    frame = stability(table, config) if len(table.models()) >= 2 else pd.DataFrame()
    if frame.empty:
        context.report.text("Stability across shifts: needs two shifts and two converged models.")
        return
    context.report.table(
        "measures_stability",
        frame,
        "Stability of Kendall tau across shifts (std of tau over the shifts, smallest first); "
        f"{config.confidence:.0%} jackknife intervals over seeds",
    )
    most = ", ".join(frame["measure"].head(NAMED))
    least = ", ".join(frame["measure"].tail(NAMED)[::-1])
    informative = frame[frame["tau_shift_mean"].abs() >= INFORMATIVE]
    context.report.text(
        f"Most stable across shifts (smallest std of tau): {most}. Least stable: {least}. "
        "A tau that stays near 0 is stable but uninformative; among measures whose mean tau "
        f"over the shifts is at least {INFORMATIVE} in absolute value, the most stable are: "
        f"{', '.join(informative['measure'].head(NAMED)) or 'none'}."
    )
