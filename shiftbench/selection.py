"""Model selection over the ledger, as DomainBed defines it (Gulrajani & Lopez-Paz, 2021).

A method gives every checkpoint of a trial a validation score; each trial keeps its
best-scoring checkpoint (or its last one); then, within each condition and solver, the
hyperparameter sample whose kept checkpoints score best is chosen and its metrics reported.
A *condition* is a dataset, a test environment, and every other dataset or objective
parameter that varies within a dataset (e.g. ``algorithm``: ERM and IRM are never mixed).

- ``training_domain``: score = ``id_acc``, the mean accuracy on the held-out 20% of the
  training environments; best checkpoint.
- ``leave_one_domain_out``: score = the mean, over the training environments ``v``, of the
  accuracy on ``v`` (``env<v>_acc``, the whole environment) of a companion run trained
  without ``v`` (and without the test environment), at the same step; best checkpoint. The
  reported metrics are the main run's (trained on every training environment). The study
  must therefore contain, for each main trial with test environment ``t`` and each other
  environment ``v``, a companion trial with identical hyperparameters, seed and every other
  parameter, whose training set leaves out both ``t`` and ``v``: a dataset parameter
  ``val_env = v`` (ledger column ``ds.val_env``; null or negative in main runs). As in
  DomainBed, one run holding out ``{t, v}`` serves both the test environment ``t`` (validating
  on ``v``) and ``v`` (validating on ``t``), whichever of the two its ``test_env`` names. A
  step lacking any of the ``n - 1`` companions is not scored (DomainBed's rule). DomainBed
  scores ``v`` on its 80% "in" split; shiftbench uses the whole environment, the same
  definition as its OOD accuracy.
- ``oracle``: test-domain validation: score = ``oracle_acc`` (the held-out 20% of the test
  environment), last checkpoint only (no early stopping, as DomainBed's oracle).

Seeds (:func:`select`): by default (``per_seed=False``) the sample with the best score
averaged over seeds is chosen once and its metrics summarised over seeds. With
``per_seed=True``, DomainBed's protocol: the search is repeated per trial seed, the best
sample is chosen within each seed, and the chosen metrics are summarised over seeds. Both
report the mean, the sample standard deviation (ddof=1) and the standard error std/sqrt(n).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ("id_acc", "ood_acc", "oracle_acc")
_NOT_CONDITION = {"ds.test_env", "ds.val_env"}


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
    """A trial's config without its test and validation environments: a main run and its
    companions share it."""
    parsed = json.loads(config)
    for key in ("test_env", "val_env"):
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
        acc = [held.at[i, f"env{e}_acc"] for i, e in zip(part.index, part["env"])]
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
    than one value within some dataset (``ds.val_env`` excluded)."""
    varying = [
        column
        for column in rows.columns
        if column.startswith(("ds.", "obj."))
        and column not in _NOT_CONDITION
        and rows.groupby("dataset")[column].nunique(dropna=False).max() > 1
    ]
    return ["dataset", "ds.test_env", *sorted(varying)]


def selected_checkpoints(rows: pd.DataFrame, method: str | SelectionMethod) -> pd.DataFrame:
    """One row per main trial: the checkpoint the method keeps, with its ``val_score``."""
    method = METHODS[method] if isinstance(method, str) else method
    scored = method.scores(rows).dropna(subset=["val_score"])
    if scored.empty:
        return scored.reset_index(drop=True)
    idx = scored.groupby("trial_id")["val_score"].idxmax()
    return scored.loc[idx].reset_index(drop=True)


def select(
    rows: pd.DataFrame,
    method: str | SelectionMethod,
    metrics: tuple[str, ...] = METRICS,
    per_seed: bool = False,
) -> pd.DataFrame:
    """Per condition and solver: the chosen sample's metrics, mean, std and standard error
    over seeds (see the module docstring for the two seed protocols)."""
    picked = selected_checkpoints(rows, method)
    if picked.empty:
        return pd.DataFrame()
    group = [*condition_columns(picked), "solver"]
    if per_seed:
        chosen = picked.loc[picked.groupby([*group, "seed"], dropna=False)["val_score"].idxmax()]
    else:
        by_sample = picked.groupby([*group, "sample"], dropna=False)
        mean_score = by_sample["val_score"].mean().rename("score").reset_index()
        best = mean_score.loc[mean_score.groupby(group, dropna=False)["score"].idxmax()]
        chosen = picked.merge(best[[*group, "sample"]], on=[*group, "sample"])
    chosen = chosen.sort_values("seed")
    stats = chosen.groupby(group, dropna=False).agg(
        **{f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")},
        seeds=("seed", "nunique"),
        sample=("sample", _joined if per_seed else "first"),
        label=("solver_label", "first"),
    )
    for m in metrics:
        stats[f"{m}_se"] = stats[f"{m}_std"] / np.sqrt(stats["seeds"])
    return stats.reset_index()


def _joined(values: pd.Series) -> str:
    return ",".join(str(v) for v in values)
