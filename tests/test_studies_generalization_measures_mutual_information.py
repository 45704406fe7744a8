"""Tests for shiftbench.studies.generalization_measures.mutual_information: the conditional mutual
information K, against an independent computation or a property."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from studies_generalization_measures_grid import HPARAMS, grid

from shiftbench.studies.generalization_measures import mutual_information


def brute_normalized_cmi(df: pd.DataFrame, m: str, g: str, cond: list[str]) -> float:
    """I(V_m; V_g | U) / H(V_g | U) from explicit counts over ordered pairs of distinct rows."""
    rows = df.to_dict("records")
    joint: Counter = Counter()
    for a, b in itertools.permutations(rows, 2):
        u = tuple((a[c], b[c]) for c in cond)
        vm = (a[m] > b[m]) - (a[m] < b[m])
        vg = (a[g] > b[g]) - (a[g] < b[g])
        joint[(u, vm, vg)] += 1
    total = sum(joint.values())
    pu, pum, pug = Counter(), Counter(), Counter()
    for (u, vm, vg), c in joint.items():
        pu[u] += c / total
        pum[(u, vm)] += c / total
        pug[(u, vg)] += c / total
    mi = sum(
        c / total * math.log2((c / total) * pu[u] / (pum[(u, vm)] * pug[(u, vg)]))
        for (u, vm, vg), c in joint.items()
    )
    h = -sum(p * math.log2(p / pu[u]) for (u, _), p in pug.items())
    return mi / h


def test_conditional_mi_closed_form_three_models() -> None:
    df = pd.DataFrame({"m": [1.0, 2.0, 3.0], "g": [1.0, 3.0, 2.0]})
    # Ordered pairs: 2 (-,-), 2 (+,+), 1 (-,+), 1 (+,-); both marginals uniform, H(V_g) = 1 bit.
    expected = (2 / 3) * math.log2(4 / 3) + (1 / 3) * math.log2(2 / 3)
    result = mutual_information.conditional_mi(df, "m", "g", [])
    assert result.k == pytest.approx(expected)
    assert result.per_set == {(): pytest.approx(expected)}


def test_conditional_mi_matches_enumeration_per_conditioning_set() -> None:
    df = grid(seeds=2)
    df["m"] = np.round(df["gap"] + 0.05 * df["noise"], 2)
    df["m"] = df["m"].where(df["seed"] == 0, df["m"].round(1))
    result = mutual_information.conditional_mi(df, "m", "gap", HPARAMS)
    assert len(result.per_set) == 1 + 3 + 3
    for s, value in result.per_set.items():
        assert value == pytest.approx(brute_normalized_cmi(df, "m", "gap", list(s))), s
    assert result.k == pytest.approx(min(result.per_set.values()))


def test_conditional_mi_is_one_for_target_and_near_zero_for_random_measure() -> None:
    df = grid(seeds=3)
    df["neg"] = -df["gap"]
    same = mutual_information.conditional_mi(df, "gap", "gap", HPARAMS)
    assert same.k == pytest.approx(1.0)
    # K is blind to the direction of the association.
    assert mutual_information.conditional_mi(df, "neg", "gap", HPARAMS).k == pytest.approx(1.0)
    assert mutual_information.conditional_mi(df, "noise", "gap", HPARAMS).k < 0.02


def test_conditional_mi_is_nan_where_the_set_determines_the_gap() -> None:
    df = grid()
    result = mutual_information.conditional_mi(df, "gap", "gap", HPARAMS, max_conditioning=3)
    assert math.isnan(result.per_set[tuple(HPARAMS)])
    assert result.k == pytest.approx(1.0)


def test_conditional_mi_same_result_across_pair_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    df = grid(seeds=2)
    whole = mutual_information.conditional_mi(df, "noise", "gap", HPARAMS)
    monkeypatch.setattr(mutual_information, "PAIR_BLOCK", 50)
    blocked = mutual_information.conditional_mi(df, "noise", "gap", HPARAMS)
    assert blocked.per_set == pytest.approx(whole.per_set)


def test_conditional_mi_rejects_incomplete_grid() -> None:
    df = grid().iloc[1:]
    with pytest.raises(ValueError, match=r"1 of 18 combinations"):
        mutual_information.conditional_mi(df, "noise", "gap", HPARAMS)
    assert not math.isnan(
        mutual_information.conditional_mi(df, "noise", "gap", HPARAMS, require_complete=False).k
    )


def test_conditional_mi_checks_grid_after_dropping_nan_rows() -> None:
    df = grid()
    df.loc[0, "noise"] = np.nan
    with pytest.raises(ValueError, match="not a full factorial"):
        mutual_information.conditional_mi(df, "noise", "gap", HPARAMS)
