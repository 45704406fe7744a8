"""Rank correlations of a measure with a target: Jiang et al.'s Kendall tau, Kendall's tau-b
and the granulated Kendall coefficient Psi; also the row, sign and code helpers that the other
scores of :mod:`shiftbench.studies.generalization_measures.stats` share.

Source: Jiang et al., "Fantastic Generalization Measures and Where to Find Them", ICLR 2020:
Kendall tau (Eq. 2, without tie correction; tau-b is an extra), granulated Kendall Psi (Eq. 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

SMALL_SAMPLE = 256
"""Largest sample whose Kendall tau is computed from the full pairwise sign matrices."""


def _clean(df: pd.DataFrame, measure: str, target: str) -> pd.DataFrame:
    """The rows where both the measure and the target are known."""
    return df.dropna(subset=[measure, target])


def _sign(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sign(a - b) in {-1, 0, 1}, exact for infinite values (inf vs inf is a tie)."""
    return (a > b).astype(np.int8) - (a < b).astype(np.int8)


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b, 0 when either side is constant (no pair is ordered on it).

    Small samples use the pairwise sign matrices, tau-b = sum sx sy / sqrt(sum |sx|
    sum |sy|); large ones scipy's O(n log n) algorithm.
    """
    if len(x) < 2:
        return math.nan
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    if len(x) > SMALL_SAMPLE:
        return float(scipy_stats.kendalltau(x, y, variant="b").statistic)
    sx, sy = _sign(x[:, None], x[None, :]), _sign(y[:, None], y[None, :])
    concordance = float(np.sum(sx * sy))
    return concordance / math.sqrt(float(np.sum(sx != 0)) * float(np.sum(sy != 0)))


def _tied_pairs(values: np.ndarray) -> int:
    """Unordered pairs with equal values."""
    counts = np.unique(values, return_counts=True)[1].astype(np.int64)
    return int(np.sum(counts * (counts - 1) // 2))


def _tau_jiang(x: np.ndarray, y: np.ndarray) -> float:
    """Jiang et al.'s tau (Eq. 2): the mean of sign(dx) sign(dy) over all ordered pairs of
    distinct models, ties counted as 0 in the numerator and kept in the denominator
    (tau-a). Computed from tau-b (O(n log n)): tau-a = tau-b sqrt((n0 - n1)(n0 - n2)) / n0,
    with n0 the pairs and n1, n2 those tied in x, in y."""
    n = len(x)
    if n < 2:
        return math.nan
    n0 = n * (n - 1) // 2
    untied = (n0 - _tied_pairs(x)) * (n0 - _tied_pairs(y))
    return _tau_b(x, y) * math.sqrt(untied) / n0 if untied else 0.0


def kendall_tau(df: pd.DataFrame, measure: str, target: str) -> float:
    """Jiang et al.'s Kendall tau between a measure and a target over all models (ICLR 2020,
    Eq. 2): tau = sum over ordered pairs of distinct models of sign(mu_i - mu_j)
    sign(g_i - g_j), divided by n(n - 1). There is no tie correction: a measure tied on
    many pairs (e.g. ``params`` on a grid where only the learning rate varies) scores
    closer to 0 than its tau-b (`kendall_tau_b`). A constant measure scores 0; fewer than
    two models, NaN.
    """
    d = _clean(df, measure, target)
    return _tau_jiang(d[measure].to_numpy(float), d[target].to_numpy(float))


def kendall_tau_b(df: pd.DataFrame, measure: str, target: str) -> float:
    """Kendall's tau-b (scipy's default), reported as an extra next to Jiang et al.'s tau:
    the denominator is corrected for ties, so a perfect but tied ranking scores 1."""
    d = _clean(df, measure, target)
    return _tau_b(d[measure].to_numpy(float), d[target].to_numpy(float))


@dataclass(frozen=True)
class GranulatedKendall:
    """Jiang et al.'s granulated Kendall coefficient.

    ``psi`` is the mean of ``per_hparam``; ``per_hparam[h]`` is psi_h, the mean over
    groups of models that share every other hyperparameter (and the replicate) of tau
    over the group's pairs, which differ in h only.
    """

    psi: float
    per_hparam: dict[str, float]


def _tau_across(x: np.ndarray, y: np.ndarray, codes: np.ndarray) -> float:
    """Jiang's tau over the ordered pairs of a small group whose ``codes`` differ."""
    across = codes[:, None] != codes[None, :]
    sx, sy = _sign(x[:, None], x[None, :]), _sign(y[:, None], y[None, :])
    return float(np.sum((sx * sy)[across])) / float(np.sum(across))


def granulated_kendall(
    df: pd.DataFrame,
    measure: str,
    target: str,
    hparams: Sequence[str],
    replicate: str | None = "seed",
) -> GranulatedKendall:
    """Granulated Kendall Psi (Jiang et al. 2020, Eq. 3).

    psi_h = (1 / m_h) sum over the m_h values of the other hyperparameters of tau over the
    models that share them, where only theta_h changes: every pair in a group differs in
    h only. Jiang et al. train one model per configuration; with replicates, the
    ``replicate`` column (the seed; ignored when absent or None) is held fixed too, so a
    pair of models differing only in the seed, or in the seed and h, is never counted.
    tau is Jiang's (Eq. 2, no tie correction), over the group's pairs whose h differs.
    Psi is the mean of psi_h over h. Groups in which h takes a single value say nothing
    about h and are skipped; psi_h is NaN if no group is left, and Psi averages the psi_h
    that are defined.
    """
    d = _clean(df, measure, target)
    x, y = d[measure].to_numpy(float), d[target].to_numpy(float)
    fixed = [replicate] if replicate is not None and replicate in d else []
    per_hparam: dict[str, float] = {}
    for h in hparams:
        others = [o for o in hparams if o != h] + fixed
        group = d.groupby(others, dropna=False).ngroup().to_numpy() if others else np.zeros(len(d))
        varied = _codes(d[h])[0]
        order = np.argsort(group, kind="stable")
        starts = np.flatnonzero(np.diff(group[order], prepend=-1))
        taus = [
            _tau_across(x[rows], y[rows], varied[rows])
            for rows in np.split(order, starts[1:])
            if len(rows) >= 2 and np.any(varied[rows] != varied[rows[0]])
        ]
        per_hparam[h] = float(np.mean(taus)) if taus else math.nan
    defined = [v for v in per_hparam.values() if not math.isnan(v)]
    return GranulatedKendall(float(np.mean(defined)) if defined else math.nan, per_hparam)


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of a column's values (NaN is a value) and how many there are."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), max(len(uniques), 1)
