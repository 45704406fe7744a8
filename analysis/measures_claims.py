"""The headline claims of Nakai et al. (2026) that the measures study can test, and what it
found, with intervals; and what it cannot test.

1. *A measure's ranking of models holds under shift.* Per measure, its Kendall tau with
   the IID gap, the mean of its tau with the shifted gaps and the change between them, each
   oriented by the measure's declared direction (so a good measure scores positive) and
   each with a jackknife interval over the seeds (`shiftbench.stats.jackknife_cis`: the
   seed is what varies between reruns of the grid, and leaving one out keeps every pair of
   models distinct). A measure's ranking *holds* when its IID interval and its shifted
   interval both exclude 0 with the same sign; it is *weaker* under shift when the
   interval of the change (IID minus shifted, times the sign of the IID tau) lies above 0.
   Per shift, whether the ordering of the measures holds: Jiang's tau, across the
   measures, between their IID tau and their tau under that shift, with the same
   jackknife. The intervals are per statistic, not simultaneous.
2. *Which measure families are most stable for selection under shift.* The family with
   the lowest mean regret over the shifts (`measures_selection`: percentile bootstrap over
   the shifts, the selection episodes), and whether its interval is clear of the next
   family's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}


def _statistics(
    models: pd.DataFrame, table: measure_table.MeasureTable, sign: np.ndarray
) -> np.ndarray:
    """Per measure the oriented IID tau, the mean shifted tau and the change ``sign (IID -
    shifted)`` (``sign``: that of the IID tau on all models, so a positive change is a tau
    that shrinks under shift whichever way it points), then per shift the tau across
    measures between IID and shifted tau: one flat vector."""
    direction = np.array([measure_table.direction(m) for m in table.measures], dtype=float)
    taus = direction[:, None] * np.array(
        [[stats.kendall_tau(models, m, t) for t in table.gap_targets] for m in table.measures]
    )
    iid = taus[:, 0]
    shifted = pd.DataFrame(taus[:, 1:]).mean(axis=1).to_numpy()
    across = pd.DataFrame(taus, columns=list(table.gap_targets))
    agreement = [stats.kendall_tau(across, "gap_iid", t) for t in table.gap_targets[1:]]
    return np.concatenate([iid, shifted, sign * (iid - shifted), agreement])


def rankings(
    table: measure_table.MeasureTable, config: stats.ScoreConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Claim 1: a per-measure table (oriented taus, intervals, verdicts) and a per-shift
    table (agreement of the measures' ordering with the IID one)."""
    models = table.models()
    n = len(table.measures)
    sign = np.sign(_statistics(models, table, np.ones(n))[:n])
    full = _statistics(models, table, sign)
    lo, hi = stats.jackknife_cis(
        models, lambda d: _statistics(d, table, sign), confidence=config.confidence
    )
    part = {
        name: (full[i * n : (i + 1) * n], lo[i * n : (i + 1) * n], hi[i * n : (i + 1) * n])
        for i, name in enumerate(("tau_iid", "tau_shift_mean", "change"))
    }
    measures = pd.DataFrame({"measure": [measure_table.short(m) for m in table.measures]})
    for name, (value, low, high) in part.items():
        measures[name], measures[f"{name}_lo"], measures[f"{name}_hi"] = value, low, high
    informative = (measures["tau_iid_lo"] > 0) | (measures["tau_iid_hi"] < 0)
    same_sign = ((measures["tau_iid_lo"] > 0) & (measures["tau_shift_mean_lo"] > 0)) | (
        (measures["tau_iid_hi"] < 0) & (measures["tau_shift_mean_hi"] < 0)
    )
    measures["informative_iid"] = informative
    measures["holds_under_shift"] = informative & same_sign
    measures["weaker_under_shift"] = informative & (measures["change_lo"] > 0)
    shifts = pd.DataFrame(
        {
            "shift": list(table.shifts),
            "tau_across_measures": full[3 * n :],
            "lo": lo[3 * n :],
            "hi": hi[3 * n :],
        }
    )
    return measures.sort_values("tau_iid", ascending=False, kind="stable"), shifts


def families(table: measure_table.MeasureTable, config: stats.ScoreConfig) -> pd.DataFrame:
    """Claim 2: families by their mean regret over the shifted gaps, lowest first, with the
    bootstrap interval over shifts and the hit rate (from `measures_selection`)."""
    selection = registry.analysis("measures_selection")
    summary = selection.summary(selection.scores(table, config), table, config, "family")
    columns = ["family", "regret_gap_ood", "regret_gap_ood_lo", "regret_gap_ood_hi"]
    columns += ["hit_rate_gap_ood", "hit_rate_gap_ood_lo", "hit_rate_gap_ood_hi"]
    return summary[columns].sort_values("regret_gap_ood", kind="stable")


def _interval(value: float, lo: float, hi: float) -> str:
    return f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _regret(row: pd.Series) -> str:
    interval = _interval(row["regret_gap_ood"], row["regret_gap_ood_lo"], row["regret_gap_ood_hi"])
    return f"{row['family']} {interval} (hit rate {row['hit_rate_gap_ood']:.3f})"


def findings(measures: pd.DataFrame, shifts: pd.DataFrame, ranked: pd.DataFrame) -> list[str]:
    """The sentences the report states for each claim."""
    informative = measures[measures["informative_iid"]]
    holds, weaker = informative["holds_under_shift"], informative["weaker_under_shift"]
    best = informative.head(5)
    lines = [
        f"Claim 1, a measure's ranking of models holds under shift: {len(informative)} of "
        f"{int(measures['tau_iid'].notna().sum())} measures with a defined IID tau have one "
        "whose interval excludes 0; for "
        f"{int(holds.sum())} of them the mean tau over the shifts keeps that sign (interval "
        f"excluding 0), and {int(weaker.sum())} are significantly weaker under shift (the "
        "interval of the IID tau's lead over the shifted one lies above 0). Largest IID "
        "tau (oriented), IID then mean shifted: "
        + "; ".join(
            f"{r.measure} {_interval(r.tau_iid, r.tau_iid_lo, r.tau_iid_hi)} -> "
            f"{_interval(r.tau_shift_mean, r.tau_shift_mean_lo, r.tau_shift_mean_hi)}"
            for r in best.itertuples()
        )
        + ". The ordering of the measures by tau, IID against each shift (Jiang's tau "
        "across measures): "
        + "; ".join(
            f"{r.shift} {_interval(r.tau_across_measures, r.lo, r.hi)}"
            for r in shifts.itertuples()
        )
        + "."
    ]
    known = ranked.dropna(subset=["regret_gap_ood"])
    if len(known) >= 2:
        first, second = known.iloc[0], known.iloc[1]
        clear = first["regret_gap_ood_hi"] < second["regret_gap_ood_lo"]
        lines.append(
            "Claim 2, the most stable families for selection under shift (lowest mean regret "
            f"over the shifted gaps): {_regret(first)}, then {_regret(second)}"
            + (
                "; the intervals are clear of each other."
                if clear
                else "; the intervals overlap, so the order of the two is not established."
            )
        )
    return lines


def cannot_test(table: measure_table.MeasureTable) -> str:
    """What this study's design leaves out, in one sentence."""
    return (
        "Not testable here: claims across datasets, architectures or training-set sizes "
        f"(one dataset and one architecture; {len(table.hparams)} hyperparameters vary: "
        f"{', '.join(h.split('.', 1)[-1] for h in table.hparams)}), and sign-error claims for "
        "a target whose environments all fail the ESS filter (see the robust sign error)."
    )


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    if len(table.models()) < 2 or not table.measures or not table.shifts:
        context.report.text("Claims: needs two converged models, measures and a shift.")
        return
    config = stats.ScoreConfig(**context.study.score_config)
    measures, shifts = rankings(table, config)
    ranked = families(table, config)
    level = f"{config.confidence:.0%}"
    for line in [*findings(measures, shifts, ranked), cannot_test(table)]:
        context.report.text(line)
    context.report.table(
        "measures_claims_rankings",
        measures,
        f"Claim 1 per measure: oriented tau, IID and mean over shifts, and their change, "
        f"{level} jackknife intervals over seeds",
    )
    context.report.table(
        "measures_claims_shifts",
        shifts,
        f"Claim 1 per shift: Jiang's tau across measures between IID and shifted tau, {level} "
        "jackknife interval over seeds",
    )
    context.report.table(
        "measures_claims_families",
        ranked,
        f"Claim 2: families by mean regret over the shifted gaps, {level} bootstrap "
        "intervals over shifts",
    )
