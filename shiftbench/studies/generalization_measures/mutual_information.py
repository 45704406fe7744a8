"""Jiang et al.'s conditional mutual information K of a measure and a target, and the
full-factorial check of the hyperparameter grid it needs.

Sources: Jiang et al., "Fantastic Generalization Measures and Where to Find Them", ICLR 2020:
conditional mutual information K (Eq. 4-5), with the PGDL competition scorer
(google-research/google-research ``pgdl``) for the pair construction and the grid
completeness check.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shiftbench.studies.generalization_measures.correlation import _clean, _codes, _sign

PAIR_BLOCK = 2_000_000
"""Ordered model pairs processed at once by `conditional_mi` (bounds memory)."""


def check_full_factorial(df: pd.DataFrame, hparams: Sequence[str]) -> None:
    """Raise ValueError unless every combination of the observed hyperparameter values is present.

    This is the completeness half of the PGDL scorer's data validity check: the
    conditional mutual information compares slices of the grid, which is only
    meaningful when the grid is a full factorial. Replicates (several models per
    combination, e.g. seeds) are allowed.
    """
    if not hparams:
        return
    levels = [df[h].nunique(dropna=False) for h in hparams]
    expected = math.prod(levels)
    present = len(df[list(hparams)].drop_duplicates())
    if present < expected:
        shape = " x ".join(f"{h}={n}" for h, n in zip(hparams, levels))
        raise ValueError(
            f"hyperparameter grid is not a full factorial: {expected - present} of {expected} "
            f"combinations ({shape}) are missing; pass require_complete=False to score anyway"
        )


@dataclass(frozen=True)
class ConditionalMI:
    """Jiang et al.'s conditional mutual information score.

    ``k`` is the minimum of ``per_set``, which maps each conditioning set S (a
    tuple of hyperparameter names, () for the unconditioned score) to
    I(V_mu; V_g | U_S) / H(V_g | U_S); NaN for a set where H(V_g | U_S) = 0.
    """

    k: float
    per_set: dict[tuple[str, ...], float]


def _pair_tables(
    measure: np.ndarray,
    target: np.ndarray,
    hparam_codes: list[tuple[np.ndarray, int]],
    sets: list[tuple[int, ...]],
) -> list[np.ndarray]:
    """Counts of (U_S, V_mu, V_g) over ordered pairs of distinct models, one table per set.

    Each table has shape (slices, 3, 3): the slice is the pair's values of the
    hyperparameters in S (both models' values, as in the PGDL scorer), the other
    axes sign(mu_i - mu_j) and sign(g_i - g_j) shifted to {0, 1, 2}.
    """
    n = len(measure)
    sizes = [math.prod(hparam_codes[h][1] ** 2 for h in s) for s in sets]
    tables = [np.zeros(size * 9, dtype=np.int64) for size in sizes]
    rows_per_block = max(1, PAIR_BLOCK // max(n, 1))
    for start in range(0, n, rows_per_block):
        i = np.arange(start, min(start + rows_per_block, n))
        off_diagonal = i[:, None] != np.arange(n)[None, :]
        joint = (
            3 * (_sign(measure[i, None], measure[None, :]) + 1)
            + _sign(target[i, None], target[None, :])
            + 1
        )[off_diagonal].astype(np.int64)
        pair_codes = [
            (codes[i, None] * card + codes[None, :])[off_diagonal] for codes, card in hparam_codes
        ]
        for table, s in zip(tables, sets):
            slice_code = np.zeros_like(joint)
            for h in s:
                slice_code = slice_code * hparam_codes[h][1] ** 2 + pair_codes[h]
            table += np.bincount(slice_code * 9 + joint, minlength=len(table))
    return [t.reshape(-1, 3, 3) for t in tables]


def _normalized_cmi(table: np.ndarray) -> float:
    """I(V_mu; V_g | U) / H(V_g | U) from counts of shape (slices, 3, 3), in bits."""
    p = table / table.sum()
    p_u = p.sum(axis=(1, 2))[:, None, None]
    p_u_mu = p.sum(axis=2, keepdims=True)
    p_u_g = p.sum(axis=1, keepdims=True)
    mi_ratio = np.divide(p * p_u, p_u_mu * p_u_g, out=np.ones_like(p), where=p > 0)
    cmi = float(np.sum(p * np.log2(mi_ratio)))
    g_given_u = np.divide(p_u_g, p_u, out=np.ones_like(p_u_g), where=p_u_g > 0)
    h_g = float(-np.sum(p_u_g * np.log2(g_given_u)))
    return max(cmi, 0.0) / h_g if h_g > 1e-12 else math.nan


def conditional_mi(
    df: pd.DataFrame,
    measure: str,
    target: str,
    hparams: Sequence[str],
    max_conditioning: int = 2,
    require_complete: bool = True,
) -> ConditionalMI:
    """Conditional mutual information K (Jiang et al. 2020, Eq. 4-5).

    Over ordered pairs (i, j) of distinct models, V_mu = sign(mu_i - mu_j) and
    V_g = sign(g_i - g_j); U_S is the pair's values (both models') of the
    hyperparameters in S, as in the PGDL scorer. For every S with |S| <=
    ``max_conditioning`` (the empty set included, as in the paper; the scorer
    uses |S| = 2 only), the score is I(V_mu; V_g | U_S) / H(V_g | U_S), and K is
    the minimum over the sets where it is defined: the measure's information
    about the gap that no small set of hyperparameters explains away, in [0, 1].

    Choices, stated: ordered pairs make the table symmetric under swapping the
    two models, so the arbitrary row order does not matter; self-pairs (which the
    PGDL scorer counts, as concordant) are left out; a tie is a third value of
    V, so a constant measure scores 0 instead of being undefined. Slices are
    weighted by their share of pairs (the scorer averages slices uniformly; with
    its self-pairs they are equally large on a complete, balanced grid). K is
    blind to the sign of the association: read it with tau. Cost is O(n^2) per
    conditioning set.

    Raises ValueError (from `check_full_factorial`) if the hyperparameter grid
    of the kept rows is not a full factorial, unless ``require_complete=False``.
    """
    d = _clean(df, measure, target)
    if require_complete:
        check_full_factorial(d, hparams)
    hparam_codes = [_codes(d[h]) for h in hparams]
    sets = [
        s
        for size in range(min(max_conditioning, len(hparams)) + 1)
        for s in itertools.combinations(range(len(hparams)), size)
    ]
    if len(d) < 2:
        return ConditionalMI(math.nan, {tuple(hparams[h] for h in s): math.nan for s in sets})
    tables = _pair_tables(
        d[measure].to_numpy(float), d[target].to_numpy(float), hparam_codes, sets
    )
    per_set = {tuple(hparams[h] for h in s): _normalized_cmi(t) for s, t in zip(sets, tables)}
    defined = [v for v in per_set.values() if not math.isnan(v)]
    return ConditionalMI(min(defined) if defined else math.nan, per_set)
