"""Resampling intervals of the scores: the percentile bootstrap over independent units and the
normal jackknife over the seeds (leave one seed out).

Sources: scipy.stats.bootstrap (percentile method); Efron & Tibshirani, "An Introduction to
the Bootstrap", 1993, Eq. 11.5 (the jackknife standard error).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaN dropped), each value one
    independent unit (scipy.stats.bootstrap); NaN when fewer than two units."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return math.nan, math.nan
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    result = scipy_stats.bootstrap(
        (x,),
        np.mean,
        confidence_level=confidence,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def jackknife_interval(
    full: np.ndarray, loo: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Normal jackknife interval ``full +- z se`` of each statistic (Efron & Tibshirani 1993,
    Eq. 11.5: ``se^2 = (n - 1) / n sum_u (loo_u - mean loo)^2``), from the statistics on all
    the data (``full``, one per column) and with each of the n units left out (``loo``, n
    rows); NaN where a leave-one-out value is NaN."""
    loo = np.asarray(loo, dtype=float).reshape(len(loo), -1)
    n = len(loo)
    se = np.sqrt((n - 1) / n * np.sum((loo - loo.mean(axis=0)) ** 2, axis=0))
    z = float(scipy_stats.norm.ppf(0.5 + confidence / 2))
    return np.asarray(full, dtype=float) - z * se, np.asarray(full, dtype=float) + z * se


def jackknife_cis(
    df: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], Sequence[float]],
    unit: str = "seed",
    confidence: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """`jackknife_ci` of several statistics at once (``statistic`` returns one value per
    statistic): arrays of lower and upper ends, NaN when fewer than two units."""
    units = df[unit].dropna().unique()
    full = np.asarray(statistic(df), dtype=float)
    if len(units) < 2:
        return np.full(full.shape, math.nan), np.full(full.shape, math.nan)
    loo = np.array([statistic(df[df[unit] != u]) for u in units], dtype=float)
    return jackknife_interval(full, loo, confidence)


def jackknife_ci(
    df: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], float],
    unit: str = "seed",
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Normal interval statistic(df) +- z se from the jackknife over the values of ``unit``
    (leave one out; `jackknife_interval`): for a study on a fixed grid, the seed is what
    varies between reruns, and leaving a whole seed out keeps every pair of distinct models
    distinct (a bootstrap would duplicate models, and duplicated models tie, which biases
    Jiang's tau, Psi and K towards 0). NaN when fewer than two units."""
    lo, hi = jackknife_cis(df, lambda d: [statistic(d)], unit, confidence)
    return float(lo[0]), float(hi[0])
