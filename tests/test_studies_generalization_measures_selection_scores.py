"""Tests for shiftbench.studies.generalization_measures.selection_scores: the normalized regret and
the top-k hit rate, against an independent computation or a property."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from studies_generalization_measures_grid import grid

from shiftbench.studies.generalization_measures import selection_scores


def test_selection_takes_the_measures_direction() -> None:
    df = pd.DataFrame({"m": [1.0, 2.0, 3.0, 4.0, 5.0], "g": [0.5, 0.4, 0.3, 0.2, 0.1]})
    assert selection_scores.normalized_regret(df, "m", "g") == 1.0
    assert selection_scores.normalized_regret(df, "m", "g", direction=-1) == 0.0
    assert selection_scores.top_k_hit_rate(df, "m", "g", direction=-1) == 1.0


def test_regret_zero_for_oracle_and_one_for_anti_oracle() -> None:
    df = grid(seeds=2)
    df["neg"] = -df["gap"]
    assert selection_scores.normalized_regret(df, "gap", "gap") == 0.0
    assert selection_scores.normalized_regret(df, "neg", "gap") == 1.0
    assert selection_scores.top_k_hit_rate(df, "gap", "gap") == 1.0
    assert selection_scores.top_k_hit_rate(df, "neg", "gap") == 0.0


def test_regret_and_hit_rate_by_hand_with_ties_and_groups() -> None:
    df = pd.DataFrame(
        {
            "task": ["a"] * 5 + ["b"] * 5,
            "g": [0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, 50.0],
            "m": [5.0, 0.0, 0.0, 1.0, 2.0, 3.0, 2.0, 9.0, 9.0, 9.0],
        }
    )
    # Task a: tie between g = 1 and g = 2 -> mean 1.5 -> regret 1.5 / 4; top-1 is g = 0: no hit.
    # Task b: picks g = 20 -> regret 10 / 40; top-1 (ceil(0.2 * 5)) is g = 10: no hit.
    assert selection_scores.normalized_regret(df, "m", "g", by=["task"]) == pytest.approx(
        (0.375 + 0.25) / 2
    )
    assert selection_scores.top_k_hit_rate(df, "m", "g", by=["task"]) == 0.0
    # frac 0.4 -> top-2: task a has one of the two tied picks in (g = 1), task b's pick is in.
    assert selection_scores.top_k_hit_rate(df, "m", "g", frac=0.4, by=["task"]) == pytest.approx(
        0.75
    )


def test_selection_scores_are_nan_when_the_measure_is_missing_everywhere():
    df = pd.DataFrame({"m": [np.nan] * 4, "g": [0.1, 0.2, 0.3, 0.4]})
    assert math.isnan(selection_scores.normalized_regret(df, "m", "g"))
    assert math.isnan(selection_scores.top_k_hit_rate(df, "m", "g"))
