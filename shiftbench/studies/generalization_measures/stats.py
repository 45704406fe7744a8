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
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

PAIR_BLOCK = 2_000_000
"""Ordered model pairs processed at once by `conditional_mi` (bounds memory)."""

SMALL_SAMPLE = 256
"""Largest sample whose Kendall tau is computed from the full pairwise sign matrices."""

MIN_ESS = 12.0
"""Dziugaite et al.'s (2020) effective-sample-size threshold for an environment (Sec. 6;
``min_ess=12.`` in the reference's ``figure_cdf_all_measures.get_all_losses``)."""

QUANTILES = ("reference", "empirical")
"""How the 90th-percentile sign error is taken; see `robust_sign_error`."""


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


def _codes(values: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of a column's values (NaN is a value) and how many there are."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), max(len(uniques), 1)


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


def hoeffding_weight(
    delta: np.ndarray | float, n_test: int, min_weight: float = 0.5
) -> np.ndarray:
    """Weight of a pair whose generalization gaps differ by ``delta`` (Dziugaite et al. 2020).

    With gaps estimated on ``n_test`` test points, Hoeffding's inequality gives
    P(|error estimate - error| >= t) <= 2 exp(-2 n t^2) for each network; taking
    t = |delta| / 2 for both, the probability that the two true gaps are ordered
    as observed is at least p = max(0, 1 - 2 exp(-n delta^2 / 2))^2. The weight is
    (p - min_weight)_+, so pairs not distinguishable from noise with probability
    above ``min_weight`` (0.5 in the reference code) get no weight. Gaps are
    assumed to be error rates in [0, 1].
    """
    delta = np.abs(np.asarray(delta, dtype=float))
    p = np.maximum(0.0, 1.0 - 2.0 * np.exp(-n_test * delta**2 / 2.0)) ** 2
    return np.maximum(p - min_weight, 0.0)


def hoeffding_threshold(n_test: int, min_weight: float = 0.5) -> float:
    """The smallest gap difference whose `hoeffding_weight` is positive: p > ``min_weight``
    means 1 - 2 exp(-n delta^2 / 2) > sqrt(min_weight), i.e. delta > sqrt(2 ln(2 / (1 -
    sqrt(min_weight))) / n) (0.134 for n = 215 and the reference's 0.5)."""
    return math.sqrt(2.0 * math.log(2.0 / (1.0 - math.sqrt(min_weight))) / n_test)


@dataclass(frozen=True)
class SignErrorResult:
    """Dziugaite et al.'s robust sign error of a measure.

    ``environments`` has one row per environment: ``hparam`` (the one changed),
    ``value_a``, ``value_b`` (its two values), the values of the other
    hyperparameters (None in the changed one's column), ``n_pairs``, ``weight``
    (sum of pair weights), ``ess`` ((sum w)^2 / sum w^2), ``sign_error`` (weighted
    mean over the pairs) and ``kept`` (ess >= min_ess). ``mean``, ``p90`` and
    ``max`` summarize the kept environments' sign errors (NaN if none is kept);
    ``mean_ci`` and ``p90_ci`` are their jackknife intervals over the ``unit`` given to
    `robust_sign_error` (NaN without one).
    """

    environments: pd.DataFrame = field(compare=False)
    mean: float
    p90: float
    max: float
    mean_ci: tuple[float, float] = (math.nan, math.nan)
    p90_ci: tuple[float, float] = (math.nan, math.nan)


def _environment_pairs(
    d: pd.DataFrame,
    measure: str,
    target: str,
    h: str,
    hparams: Sequence[str],
    match: Sequence[str],
    units: Sequence[str] = (),
) -> pd.DataFrame:
    """All pairs of models that differ in ``h`` only (and agree on ``match``), one row each,
    with both models' ``units`` columns (as ``<unit>_a``, ``<unit>_b`` unless matched)."""
    others = [o for o in hparams if o != h]
    keys = [*others, *[m for m in match if m not in others]]
    columns = list(dict.fromkeys([*keys, h, measure, target, *units]))
    left = d[columns].assign(_code=pd.factorize(d[h], sort=True, use_na_sentinel=False)[0])
    if keys:
        pairs = left.merge(left, on=keys, suffixes=("_a", "_b"))
    else:
        pairs = left.merge(left, how="cross", suffixes=("_a", "_b"))
    pairs = pairs[pairs["_code_a"] < pairs["_code_b"]]
    return pairs.assign(hparam=h, value_a=pairs[f"{h}_a"], value_b=pairs[f"{h}_b"])


def robust_sign_error(
    df: pd.DataFrame,
    measure: str,
    target: str,
    hparams: Sequence[str],
    n_test: int,
    min_ess: float = MIN_ESS,
    match: Sequence[str] = (),
    min_weight: float = 0.5,
    quantile: str = "reference",
    unit: str | None = None,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> SignErrorResult:
    """Robust sign error over coupled environments (Dziugaite et al. 2020, Sec. 5-6).

    An environment is a pair of hyperparameter configurations that differ in
    exactly one hyperparameter h (the reference code's coupled networks): it is
    named by h, the two values of h and the values of every other hyperparameter.
    Its pairs of networks are all (model of the first, model of the second)
    combinations of their replicates, or only those that agree on the ``match``
    columns (e.g. ``["seed"]`` to couple networks by seed; this caps the
    effective sample size at the number of seeds). Each pair's sign error is
    (1 - sign(d mu) sign(d g)) / 2: 0 when the measure orders the pair as the
    gap does, 1 when reversed, 1/2 on a tie; it is weighted by
    `hoeffding_weight` of the gap difference, with ``n_test`` the size of the
    test set the target was measured on. An environment's sign error is the
    weighted mean; environments with effective sample size below ``min_ess``
    are dropped from the summary. Each unordered pair of configurations is one
    environment (the reference lists both orders). ``p90`` with ``quantile="reference"``
    is the reference figures' ``np.percentile(losses, q=90)`` (linear interpolation) over
    that list, each environment twice (``figure_cdf_all_measures.make_figure``), which is
    not the 90th percentile of the environments listed once; ``"empirical"`` is the
    empirical-CDF (inverted-CDF) quantile, the same for either list.

    With ``unit`` (a column, e.g. ``"seed"``), ``mean_ci`` and ``p90_ci`` are percentile
    bootstrap intervals (``resamples`` draws, seeded by ``seed``) over its values: a draw
    takes the values with replacement, a pair of models counts once per copy of its pair
    of values (the product of their counts; per copy of the value when ``match`` holds the
    unit fixed), and each kept environment's sign error is recomputed with those
    multiplicities. The environments are those the filter keeps on all the data (the filter
    is a decision taken once, so duplicated pairs cannot inflate an ESS; an environment
    left with no weight drops out of that draw). The seed is the unit because it is what
    varies between reruns of a fixed grid: the environments are the grid's complete set of
    neighbouring configurations, not a sample, and they share models, so resampling them
    as independent units would give intervals too narrow (rliable#20). Duplicating seeds
    does no harm here, unlike for tau and K: every pair joins two configurations, so no
    pair is a model with its own copy. A bootstrap, not the jackknife used for tau, Psi and
    K (`jackknife_ci`), because the 90th percentile is not smooth and the jackknife's
    variance of a quantile is inconsistent (Efron & Tibshirani 1993, Sec. 11.6).
    """
    d = _clean(df, measure, target)
    units = [unit] if unit is not None and unit in d else []
    frames, pair_frames = [], []
    for h in hparams:
        pairs = _environment_pairs(d, measure, target, h, hparams, match, units)
        dm = _sign(pairs[f"{measure}_a"].to_numpy(float), pairs[f"{measure}_b"].to_numpy(float))
        g_a, g_b = pairs[f"{target}_a"].to_numpy(float), pairs[f"{target}_b"].to_numpy(float)
        w = hoeffding_weight(g_a - g_b, n_test, min_weight)
        err = (1.0 - dm * _sign(g_a, g_b)) / 2.0
        keys = [o for o in hparams if o != h]
        env_keys = ["hparam", "value_a", "value_b", *keys]
        env = (
            pairs[env_keys]
            .assign(n_pairs=1, weight=w, w2=w**2, werr=w * err)
            .groupby(env_keys, dropna=False, sort=False)
            .sum()
            .reset_index()
        )
        frames.append(env.assign(**{h: None}))
        if units:
            ids = pairs.groupby(env_keys, dropna=False, sort=False).ngroup().to_numpy()
            a, b = (unit, unit) if unit in match else (f"{unit}_a", f"{unit}_b")
            pair_frames.append((ids, w, err, pairs[a].to_numpy(), pairs[b].to_numpy()))
    columns = ["hparam", "value_a", "value_b", *hparams, "n_pairs", "weight", "ess", "sign_error"]
    envs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if envs.empty:
        envs = pd.DataFrame(columns=[*columns, "kept"])
    else:
        positive = envs["weight"] > 0
        envs["ess"] = np.where(positive, envs["weight"] ** 2 / envs["w2"].where(positive, 1), 0.0)
        envs["sign_error"] = envs["werr"] / envs["weight"].where(positive)
        envs = envs[columns].assign(
            kept=(envs["ess"] >= min_ess) | np.isclose(envs["ess"], min_ess)
        )
    kept = envs["kept"].to_numpy(bool)
    errors = envs.loc[kept, "sign_error"].to_numpy(float)
    if len(errors) == 0:
        return SignErrorResult(envs, math.nan, math.nan, math.nan)
    mean_ci = p90_ci = (math.nan, math.nan)
    values = d[unit].dropna().unique() if units else []
    if len(values) >= 2:
        draws = _bootstrap_errors(
            pair_frames, kept, pd.Index(values), unit in match, resamples, seed
        )
        tails = [50 * (1 - confidence), 50 * (1 + confidence)]
        mean_ci = tuple(np.nanpercentile(np.nanmean(draws, axis=1), tails).tolist())
        p90_ci = tuple(np.nanpercentile(_quantiles(draws, 0.9, quantile), tails).tolist())
    return SignErrorResult(
        envs,
        float(errors.mean()),
        sign_error_quantile(errors, 0.9, quantile),
        float(errors.max()),
        mean_ci,
        p90_ci,
    )


def _bootstrap_errors(
    pair_frames: list[tuple],
    kept: np.ndarray,
    values: pd.Index,
    matched: bool,
    resamples: int,
    seed: int,
) -> np.ndarray:
    """The kept environments' sign errors in each of ``resamples`` draws of the unit's
    ``values`` with replacement (rows: draws; NaN for an environment left with no weight)."""
    offsets = np.cumsum([0] + [int(f[0].max()) + 1 if len(f[0]) else 0 for f in pair_frames])
    env = np.concatenate([f[0] + offset for f, offset in zip(pair_frames, offsets)])
    w, err, unit_a, unit_b = (np.concatenate([f[i] for f in pair_frames]) for i in range(1, 5))
    index = np.full(len(kept), -1)
    index[kept] = np.arange(int(kept.sum()))
    env = index[env]
    on = env >= 0
    onehot = np.zeros((int(on.sum()), int(kept.sum())))
    onehot[np.arange(len(onehot)), env[on]] = 1.0
    counts = np.random.default_rng(seed).multinomial(
        len(values), np.full(len(values), 1 / len(values)), size=resamples
    )
    a, b = values.get_indexer(unit_a[on]), values.get_indexer(unit_b[on])
    multiplicity = counts[:, a] if matched else counts[:, a] * counts[:, b]
    weight = (multiplicity * w[on]) @ onehot
    werr = (multiplicity * (w * err)[on]) @ onehot
    return np.divide(werr, weight, out=np.full(weight.shape, np.nan), where=weight > 0)


def _quantiles(errors: np.ndarray, q: float, quantile: str) -> np.ndarray:
    """`sign_error_quantile` of each row of ``errors``, NaN entries left out."""
    if quantile == "reference":
        return np.nanpercentile(np.repeat(errors, 2, axis=-1), 100 * q, axis=-1)
    return np.nanquantile(errors, q, axis=-1, method="inverted_cdf")


def sign_error_quantile(errors: np.ndarray, q: float, quantile: str = "reference") -> float:
    """The ``q`` quantile of environments' sign errors, each environment listed once:
    ``reference`` lists each twice and interpolates linearly, as Dziugaite et al.'s figures
    do (``np.percentile`` over both orders of every environment); ``empirical`` is the
    inverted-CDF quantile."""
    return float(_quantiles(np.asarray(errors, dtype=float)[None], q, quantile)[0])


def sign_error_cdf(result: SignErrorResult) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of the kept environments' sign errors, as (sorted errors x, F(x)) steps."""
    kept = result.environments["kept"].astype(bool)
    x = np.sort(result.environments.loc[kept, "sign_error"].to_numpy(float))
    return x, np.arange(1, len(x) + 1) / max(len(x), 1)


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
