"""Model selection over the ledger, as DomainBed defines it (Gulrajani & Lopez-Paz, 2021;
``domainbed/model_selection.py`` and ``scripts/collect_results.py``).

A method gives every checkpoint of a trial a validation score; each trial keeps its
best-scoring checkpoint (the earliest among equals, as DomainBed's ``argmax``) or its last
one; then, within each condition and solver, a hyperparameter sample is chosen and its metrics
reported. A *condition* is a dataset, a test environment, and every other dataset or objective
parameter that varies within a dataset (e.g. ``algorithm``: ERM and IRM are never mixed).

- ``training_domain``: score = ``id_acc``, the mean accuracy on the held-out 20% of the
  training environments; best checkpoint.
- ``leave_one_domain_out``: score = the mean, over the training environments ``v``, of the
  accuracy on ``v``'s in-split (``env<v>_in_acc``, DomainBed's ``LeaveOneOutSelectionMethod``)
  of a companion run trained without ``v`` (and without the test environment), at the same
  step; best checkpoint. The reported metrics are the main run's (trained on every training
  environment). The study must therefore contain, for each main trial with test environment
  ``t`` and each other environment ``v``, a companion trial with identical hyperparameters,
  seed and every other parameter, whose training set leaves out both ``t`` and ``v``: a dataset
  parameter ``val_env = v`` (ledger column ``ds.val_env``; negative in main runs; the study
  expansion adds the companions, see :mod:`shiftbench.spec.study`). As in DomainBed, one run
  holding out ``{t, v}`` serves both the test environment ``t`` (validating on ``v``) and ``v``
  (validating on ``t``), whichever of the two its ``test_env`` names. A step lacking any of the
  ``n - 1`` companions is not scored (DomainBed's rule).
- ``oracle``: test-domain validation: score = ``oracle_acc`` (the held-out 20% of the test
  environment), last checkpoint only (no early stopping, as DomainBed's oracle).

Metrics (see ``objective.py``): ``test_in_acc`` is the test accuracy DomainBed's tables report
(``env<t>_in_acc``); ``avg_test_acc`` is Naganuma et al.'s; ``ood_acc`` the whole test
environment. Ledgers written before the first two were columns get them from
``env<t>_in_acc``/``env<t>_out_acc`` (:func:`with_test_metrics`).

Seeds (:func:`select`): by default (``per_seed=True``) DomainBed's protocol: per trial seed the
sample with the best kept score is chosen (among equal scores the last sample, as DomainBed's
``hparams_accs`` sorts by score and reverses), and the chosen metrics are summarised over trial
seeds. ``per_seed=False`` chooses one sample by its score averaged over seeds instead. Both
report the mean, the sample standard deviation (ddof=1), the standard error std/sqrt(n) and
DomainBed's error bar ``_err`` (``collect_results.format_mean``: ``np.std(x / sqrt(n))``, the
population standard deviation, ddof=0, over trial seeds divided by sqrt(n)).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shiftbench.store import schema

METRICS = ("id_acc", "test_in_acc", "ood_acc", "avg_test_acc", "oracle_acc")
DEFAULT_HOLDOUT = 0.2
# per-trial seeds of the data (shiftbench.data.seeds) are repetitions, not conditions
_NOT_CONDITION = {"ds.test_env", "ds.val_env", "ds.data_seed", "ds.split_seed"}


@dataclass(frozen=True)
class SelectionMethod:
    """How checkpoints are scored: ``scores(rows)`` returns the candidate checkpoint rows of
    the main runs with a ``val_score`` column; each trial keeps its best-scoring one."""

    name: str
    description: str
    scores: Callable[[pd.DataFrame], pd.DataFrame]


def main_runs(rows: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint rows of the main runs: not a leave-one-domain-out companion, step >= 0."""
    rows = rows[rows["step"] >= 0]
    return rows[~_is_companion(rows)]


def _is_companion(rows: pd.DataFrame) -> pd.Series:
    if "ds.val_env" not in rows:
        return pd.Series(False, index=rows.index)
    val_env = pd.to_numeric(rows["ds.val_env"], errors="coerce")
    return val_env.notna() & (val_env >= 0)


def with_test_metrics(rows: pd.DataFrame) -> pd.DataFrame:
    """``test_in_acc`` and ``avg_test_acc`` filled in from the test environment's
    ``env<t>_in_acc``/``env<t>_out_acc`` where the ledger lacks them (older ledgers)."""
    if rows.empty or "ds.test_env" not in rows:
        return rows
    test_env = pd.to_numeric(rows["ds.test_env"], errors="coerce")

    def test_column(suffix: str) -> pd.Series:
        values = pd.Series(np.nan, index=rows.index)
        for env in test_env.dropna().unique():
            column = schema.env_column(int(env), suffix)
            if column in rows:
                values[test_env == env] = rows.loc[test_env == env, column]
        return values

    in_acc, out_acc = test_column("in_acc"), test_column("out_acc")
    fraction = rows.get("ds.holdout_fraction", DEFAULT_HOLDOUT)
    derived = {
        "test_in_acc": in_acc,
        "avg_test_acc": (1 - fraction) * in_acc + fraction * out_acc,
    }
    return rows.assign(
        **{name: rows[name].fillna(v) if name in rows else v for name, v in derived.items()}
    )


def _column_score(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def scores(rows: pd.DataFrame) -> pd.DataFrame:
        return main_runs(rows).assign(val_score=lambda f: f[column])

    return scores


def _last_step_score(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Only each trial's last checkpoint is a candidate (no early stopping)."""

    def scores(rows: pd.DataFrame) -> pd.DataFrame:
        main = main_runs(rows)
        last = main.loc[main.groupby("trial_id")["step"].idxmax()]
        return last.assign(val_score=last[column])

    return scores


def _base_key(config: str) -> str:
    """A trial's config without its test and validation environments (nor the data seed
    derived from them): a main run and its companions share it."""
    parsed = json.loads(config)
    for key in ("test_env", "val_env", "data_seed"):
        parsed["dataset_params"].pop(key, None)
    return json.dumps(parsed, sort_keys=True)


def leave_one_domain_out_scores(rows: pd.DataFrame) -> pd.DataFrame:
    """Main-run checkpoints scored by their companions' held-out-domain accuracy (see the
    module docstring); a checkpoint without all ``n - 1`` companions is dropped."""
    rows = rows[rows["step"] >= 0]
    companion = _is_companion(rows)
    main, held = rows[~companion], rows[companion]
    if main.empty or held.empty:
        return main.iloc[:0].assign(val_score=pd.Series(dtype=float))
    held_pairs = pd.DataFrame(
        {
            "base": held["config"].map(_base_key),
            "t": held["ds.test_env"].astype(int),
            "v": pd.to_numeric(held["ds.val_env"]).astype(int),
            "step": held["step"],
        },
        index=held.index,
    )
    # Each companion scores both environments it left out.
    long = []
    for env_col, other_col in (("v", "t"), ("t", "v")):
        part = held_pairs.rename(columns={env_col: "env", other_col: "other"})
        acc = [held.at[i, schema.env_column(e, "in_acc")] for i, e in zip(part.index, part["env"])]
        long.append(part.assign(acc=acc))
    companions = (
        pd.concat(long).groupby(["base", "other", "env", "step"], as_index=False)["acc"].mean()
    )
    n_envs = main.filter(regex=r"^env\d+_in_acc$").notna().sum(axis=1)
    wanted = main.assign(
        base=main["config"].map(_base_key),
        other=main["ds.test_env"].astype(int),
        n_val=n_envs - 1,
        row=main.index,
    )
    joined = wanted[["row", "base", "other", "step", "n_val"]].merge(
        companions, on=["base", "other", "step"]
    )
    scored = joined.groupby("row").agg(
        val_score=("acc", "mean"), found=("env", "nunique"), n_val=("n_val", "first")
    )
    scored = scored[scored["found"] == scored["n_val"]]
    return main.loc[scored.index].assign(val_score=scored["val_score"])


METHODS = {
    "training_domain": SelectionMethod(
        "training_domain",
        "training-domain validation (held-out 20% of the training environments)",
        _column_score("id_acc"),
    ),
    "leave_one_domain_out": SelectionMethod(
        "leave_one_domain_out",
        "leave-one-domain-out cross-validation (companion runs without each training env)",
        leave_one_domain_out_scores,
    ),
    "oracle": SelectionMethod(
        "oracle",
        "test-domain validation (oracle), last checkpoint",
        _last_step_score("oracle_acc"),
    ),
}


def condition_columns(rows: pd.DataFrame) -> list[str]:
    """``dataset``, ``ds.test_env`` and every other ``ds.*``/``obj.*`` column that takes more
    than one value within some dataset (``ds.val_env`` and the data seeds excluded)."""
    varying = [
        column
        for column in rows.columns
        if column.startswith((schema.DATASET, schema.OBJECTIVE))
        and column not in _NOT_CONDITION
        and rows.groupby("dataset")[column].nunique(dropna=False).max() > 1
    ]
    return ["dataset", "ds.test_env", *sorted(varying)]


def selected_checkpoints(rows: pd.DataFrame, method: str | SelectionMethod) -> pd.DataFrame:
    """One row per main trial: the checkpoint the method keeps, with its ``val_score`` (the
    earliest step among equal scores)."""
    method = METHODS[method] if isinstance(method, str) else method
    scored = method.scores(with_test_metrics(rows)).dropna(subset=["val_score"])
    if scored.empty:
        return scored.reset_index(drop=True)
    scored = scored.sort_values(["trial_id", "step"], kind="stable")
    idx = scored.groupby("trial_id")["val_score"].idxmax()
    return scored.loc[idx].reset_index(drop=True)


def select(
    rows: pd.DataFrame,
    method: str | SelectionMethod,
    metrics: tuple[str, ...] = METRICS,
    per_seed: bool = True,
) -> pd.DataFrame:
    """Per condition and solver: the chosen sample's metrics, mean, std, standard error and
    DomainBed's error bar over seeds (see the module docstring for the two seed protocols)."""
    picked = selected_checkpoints(rows, method)
    if picked.empty:
        return pd.DataFrame()
    group = [*condition_columns(picked), "solver"]
    if per_seed:
        ordered = picked.sort_values(["val_score", "sample"], kind="stable")
        chosen = ordered.groupby([*group, "seed"], dropna=False).tail(1)
    else:
        by_sample = picked.groupby([*group, "sample"], dropna=False)
        mean_score = by_sample["val_score"].mean().rename("score").reset_index()
        ordered = mean_score.sort_values(["score", "sample"], kind="stable")
        best = ordered.groupby(group, dropna=False).tail(1)
        chosen = picked.merge(best[[*group, "sample"]], on=[*group, "sample"])
    chosen = chosen.sort_values("seed")
    stats = chosen.groupby(group, dropna=False).agg(
        **{f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")},
        **{f"{m}_err": (m, domainbed_error) for m in metrics},
        seeds=("seed", "nunique"),
        sample=("sample", _joined if per_seed else "first"),
        label=("solver_label", "first"),
    )
    for m in metrics:
        stats[f"{m}_se"] = stats[f"{m}_std"] / np.sqrt(stats["seeds"])
    return stats.reset_index()


def by_method(rows: pd.DataFrame, metric: str = "test_in_acc") -> pd.DataFrame:
    """DomainBed's results table: one row per condition and solver, ``metric``'s mean over
    trial seeds (column ``<method>``) and DomainBed's error bar (``<method>_err``) under each
    selection method the ledger allows (leave-one-domain-out needs companion runs), with the
    number of trial seeds of the first method (``seeds``)."""
    merged = None
    for name in METHODS:
        chosen = select(rows, name, metrics=(metric,))
        if chosen.empty:
            continue
        keys = [*condition_columns(chosen), "solver"]
        part = chosen[keys].assign(
            **{name: chosen[f"{metric}_mean"], f"{name}_err": chosen[f"{metric}_err"]}
        )
        if merged is None:
            merged = part.assign(seeds=chosen["seeds"])
        else:
            merged = merged.merge(part, on=keys, how="outer")
    return pd.DataFrame() if merged is None else merged


ERROR_BAR = (
    "mean ± DomainBed's error bar over trial seeds: population std (ddof=0) / sqrt(seeds), "
    "collect_results.format_mean"
)


def domainbed_error(values: pd.Series) -> float:
    """DomainBed's error bar (``collect_results.format_mean``): ``np.std(x / sqrt(n))``, the
    population standard deviation (ddof=0) divided by sqrt(n)."""
    x = values.to_numpy(dtype=float)
    return float(np.std(x) / np.sqrt(len(x)))


def _joined(values: pd.Series) -> str:
    return ",".join(str(v) for v in values)
