"""Scores of a generalization measure against a target, on a tidy table of trained models.

The input is a pandas DataFrame with one row per trained model: hyperparameter
columns, measure columns and target columns (``gap_iid``, ``gap_ood_<shift>``,
``err_ood_<shift>``, ...). Every function takes column names.

Sign convention, shared by every score here: a measure *predicts* a target
when a larger measure goes with a larger target, the target being something to
minimise (a generalization gap or an error). Correlations are then positive
for a good measure, sign errors small, and a measure *selects* the model with
the lowest measure value. Negate a column first to score a quantity that
should be maximised (an accuracy); the selection scores take the measure's declared
``direction`` (-1: the highest value is selected), the correlations do not (a
measure that runs the other way has a negative tau).

Rows where the measure or the target is NaN are dropped by every function.
Hyperparameter values are compared exactly (round float grids beforehand).

Each score lives in a module named after its concept: `correlation` (tau, tau-b, Psi),
`mutual_information` (K), `sign_error` (the robust sign error), `selection_scores` (regret,
hit rate) and `intervals` (bootstrap and jackknife). This module holds the study's
`ScoreConfig` and `score_table`, and keeps ``stats.<name>`` working for every score.

Sources:
- Jiang et al., "Fantastic Generalization Measures and Where to Find Them",
  ICLR 2020: Kendall tau (Eq. 2, without tie correction; tau-b is an extra),
  granulated Kendall Psi (Eq. 3), conditional mutual information K (Eq. 4-5),
  with the PGDL competition scorer (google-research/google-research ``pgdl``)
  for the pair construction and the grid completeness check.
- Dziugaite et al., "In Search of Robust Measures of Generalization", NeurIPS
  2020, and its code (nitarshan/robust-generalization-measures): coupled
  environments, Hoeffding noise weights, effective sample size filter.
- Nakai et al. 2026, "Revisiting Generalization Measures Beyond IID": normalized
  regret and top-20% hit rate of the model a measure selects.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from shiftbench.studies.generalization_measures.correlation import (
    SMALL_SAMPLE,
    GranulatedKendall,
    _clean,
    granulated_kendall,
    kendall_tau,
    kendall_tau_b,
)
from shiftbench.studies.generalization_measures.intervals import (
    bootstrap_ci,
    jackknife_ci,
    jackknife_cis,
    jackknife_interval,
)
from shiftbench.studies.generalization_measures.mutual_information import (
    PAIR_BLOCK,
    ConditionalMI,
    check_full_factorial,
    conditional_mi,
)
from shiftbench.studies.generalization_measures.selection_scores import (
    normalized_regret,
    top_k_hit_rate,
)
from shiftbench.studies.generalization_measures.sign_error import (
    MIN_ESS,
    QUANTILES,
    SignErrorResult,
    hoeffding_threshold,
    hoeffding_weight,
    robust_sign_error,
    sign_error_cdf,
    sign_error_quantile,
)

__all__ = [
    "MIN_ESS",
    "PAIR_BLOCK",
    "QUANTILES",
    "SMALL_SAMPLE",
    "ConditionalMI",
    "GranulatedKendall",
    "ScoreConfig",
    "SignErrorResult",
    "bootstrap_ci",
    "check_full_factorial",
    "conditional_mi",
    "granulated_kendall",
    "hoeffding_threshold",
    "hoeffding_weight",
    "jackknife_ci",
    "jackknife_cis",
    "jackknife_interval",
    "kendall_tau",
    "kendall_tau_b",
    "normalized_regret",
    "robust_sign_error",
    "score_table",
    "sign_error_cdf",
    "sign_error_quantile",
    "top_k_hit_rate",
]


@dataclass(frozen=True)
class ScoreConfig:
    """How the measures study scores its measures (a study file's ``score_config``); the
    defaults are the references', and a study that changes one says so in its report.

    min_ess: effective sample size an environment needs to count (Dziugaite et al.: 12).
    quantile: ``reference`` (the 90th percentile of Dziugaite et al.'s figures) or
        ``empirical`` (the empirical-CDF quantile); see `robust_sign_error`.
    top_frac: the share of best models a selection must hit (Nakai et al.: 20%).
    bootstrap: resamples of the bootstrap confidence intervals (`bootstrap_ci`).
    confidence: their level.
    seed: seeds the resampling.
    """

    min_ess: float = MIN_ESS
    quantile: str = "reference"
    top_frac: float = 0.2
    bootstrap: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.min_ess > 0:
            raise ValueError(f"ScoreConfig.min_ess must be > 0, got {self.min_ess}")
        if not (0 < self.top_frac <= 1 and 0 < self.confidence < 1 and self.bootstrap >= 1):
            raise ValueError(
                "ScoreConfig: top_frac must be in (0, 1], confidence in (0, 1), bootstrap >= 1"
            )
        if self.quantile not in QUANTILES:
            raise ValueError(
                f"ScoreConfig.quantile must be one of {', '.join(QUANTILES)}, "
                f"got {self.quantile!r}"
            )


def score_table(
    df: pd.DataFrame,
    measures: Sequence[str],
    targets: Sequence[str],
    hparams: Sequence[str],
    n_test: int | Mapping[str, int],
    max_conditioning: int = 2,
    require_complete: bool = True,
    min_ess: float = MIN_ESS,
    match: Sequence[str] = (),
    frac: float = 0.2,
    by: Sequence[str] = (),
    directions: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Every score for every (measure, target): one row each, the table the analyses publish.

    Columns: measure, target, n_models, tau (Jiang's), tau_b, psi, psi_<h> for each h,
    k, sign_error_mean, sign_error_p90, sign_error_max, n_environments (kept),
    regret, hit_rate. ``n_test`` is the test-set size behind every target, or a
    mapping from target name to its own size (ID and shifted test sets differ).
    ``directions`` maps a measure to -1 when its largest value is the one to select (the
    selection scores; default +1, see `shiftbench.measures.core.Measure`).
    """
    rows = []
    for measure, target in itertools.product(measures, targets):
        n = n_test[target] if isinstance(n_test, Mapping) else n_test
        direction = (directions or {}).get(measure, 1)
        psi = granulated_kendall(df, measure, target, hparams)
        cmi = conditional_mi(df, measure, target, hparams, max_conditioning, require_complete)
        sign = robust_sign_error(df, measure, target, hparams, n, min_ess, match)
        rows.append(
            {
                "measure": measure,
                "target": target,
                "n_models": len(_clean(df, measure, target)),
                "tau": kendall_tau(df, measure, target),
                "tau_b": kendall_tau_b(df, measure, target),
                "psi": psi.psi,
                **{f"psi_{h}": v for h, v in psi.per_hparam.items()},
                "k": cmi.k,
                "sign_error_mean": sign.mean,
                "sign_error_p90": sign.p90,
                "sign_error_max": sign.max,
                "n_environments": int(sign.environments["kept"].astype(bool).sum()),
                "regret": normalized_regret(df, measure, target, by, direction),
                "hit_rate": top_k_hit_rate(df, measure, target, frac, by, direction),
            }
        )
    return pd.DataFrame(rows)
