"""Dziugaite et al.'s robust sign error of a measure: coupled environments, Hoeffding noise
weights, the effective-sample-size filter, the seed bootstrap, and the 90th percentile and
CDF of the environments' sign errors.

Sources: Dziugaite et al., "In Search of Robust Measures of Generalization", NeurIPS 2020,
and its code (nitarshan/robust-generalization-measures): coupled environments, Hoeffding noise
weights, effective sample size filter (Sec. 5-6; ``figure_cdf_all_measures``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shiftbench.studies.generalization_measures.correlation import _clean, _sign

MIN_ESS = 12.0
"""Dziugaite et al.'s (2020) effective-sample-size threshold for an environment (Sec. 6;
``min_ess=12.`` in the reference's ``figure_cdf_all_measures.get_all_losses``)."""


QUANTILES = ("reference", "empirical")
"""How the 90th-percentile sign error is taken; see `robust_sign_error`."""


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
