"""Selection scores of a measure: the normalized regret and the top-k hit rate of the model it
selects (the lowest measure, or the highest for a measure declared to run the other way).

Source: Nakai et al. 2026, "Revisiting Generalization Measures Beyond IID": normalized regret
and top-20% hit rate of the model a measure selects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from shiftbench.studies.generalization_measures.correlation import _clean


def _per_group(df: pd.DataFrame, by: Sequence[str]) -> list[pd.DataFrame]:
    """The selection episodes: one frame per group of ``by``, or the whole frame (none when
    no model has both the measure and the target)."""
    groups = [g for _, g in df.groupby(list(by), dropna=False, sort=False)] if by else [df]
    return [g for g in groups if len(g)]


def _selected(g: pd.DataFrame, measure: str, direction: int = 1) -> pd.DataFrame:
    """The models a measure selects: those with the lowest ``direction * measure`` (ties
    kept), i.e. the highest value of a measure whose larger values predict a smaller gap."""
    value = direction * g[measure]
    return g[value == value.min()]


def normalized_regret(
    df: pd.DataFrame, measure: str, target: str, by: Sequence[str] = (), direction: int = 1
) -> float:
    """Normalized regret of selecting the model a measure ranks best (Nakai et al. 2026): the
    lowest measure, or the highest with ``direction=-1`` (`shiftbench.measures.core.Measure`).

    regret = (g(selected) - min g) / (max g - min g) in [0, 1], with g the target
    (lower is better): 0 when the measure picks the best model, 1 the worst. A tie
    for the lowest measure is broken uniformly at random, so the regret is the
    mean over the tied models; a constant target gives 0. With ``by``, each group
    (e.g. dataset and shift) is one selection and the regrets are averaged.
    """
    regrets = []
    for g in _per_group(_clean(df, measure, target), by):
        lo, hi = g[target].min(), g[target].max()
        picked = _selected(g, measure, direction)[target].mean()
        regrets.append(0.0 if hi == lo else (picked - lo) / (hi - lo))
    return float(np.mean(regrets)) if regrets else math.nan


def top_k_hit_rate(
    df: pd.DataFrame,
    measure: str,
    target: str,
    frac: float = 0.2,
    by: Sequence[str] = (),
    direction: int = 1,
) -> float:
    """Rate at which the selected model is among the best ``frac`` of models by the target.

    Our reading of Nakai et al.'s top-20% hit rate (their exact definition was
    not available): a hit is the selected model (lowest ``direction * measure``) among the
    ceil(frac * n) models with the lowest target (models tied with the last of
    those count as in); ties for the lowest measure count fractionally. With
    ``by``, each group is one selection and the rate is the fraction of hits.
    """
    hits = []
    for g in _per_group(_clean(df, measure, target), by):
        k = max(1, math.ceil(frac * len(g)))
        threshold = np.sort(g[target].to_numpy(float))[k - 1]
        hits.append(float((_selected(g, measure, direction)[target] <= threshold).mean()))
    return float(np.mean(hits)) if hits else math.nan
