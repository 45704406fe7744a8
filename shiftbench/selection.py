"""Model selection over the ledger, as DomainBed defines it (Gulrajani & Lopez-Paz, 2021).

A method picks, for each trial, a checkpoint, then, for each (dataset, test
environment, solver), the hyperparameter sample whose selected checkpoints
score best on average over seeds; it reports that sample's metrics as mean
and spread over seeds.

- ``training_domain``: checkpoint and hyperparameters by ``id_acc``, the
  accuracy on the held-out 20% of the training environments.
- ``oracle``: test-domain validation, hyperparameters by ``oracle_acc`` (the
  held-out part of the test environment) at the last checkpoint (no early
  stopping, as DomainBed's oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

GROUP = ["dataset", "ds.test_env", "solver"]


@dataclass(frozen=True)
class SelectionMethod:
    """How a checkpoint and a hyperparameter sample are chosen."""

    name: str
    score: str
    last_checkpoint: bool
    description: str


METHODS = {
    "training_domain": SelectionMethod(
        "training_domain", "id_acc", False, "training-domain validation (held-out ID split)"
    ),
    "oracle": SelectionMethod(
        "oracle", "oracle_acc", True, "test-domain validation (oracle), last checkpoint"
    ),
}


def selected_checkpoints(rows: pd.DataFrame, method: SelectionMethod) -> pd.DataFrame:
    """One row per trial: the checkpoint the method picks."""
    rows = rows[rows["step"] >= 0]
    if method.last_checkpoint:
        idx = rows.groupby("trial_id")["step"].idxmax()
    else:
        idx = rows.groupby("trial_id")[method.score].idxmax()
    return rows.loc[idx.dropna().astype(int)].reset_index(drop=True)


def select(
    rows: pd.DataFrame,
    method: str | SelectionMethod,
    metrics: tuple[str, ...] = ("id_acc", "ood_acc", "oracle_acc"),
) -> pd.DataFrame:
    """Per (dataset, test_env, solver): the best sample's metrics, mean and std over seeds."""
    method = METHODS[method] if isinstance(method, str) else method
    picked = selected_checkpoints(rows, method)
    if picked.empty:
        return pd.DataFrame()
    by_sample = picked.groupby([*GROUP, "sample"])
    mean_score = by_sample[method.score].mean().rename("score").reset_index()
    best = mean_score.loc[mean_score.groupby(GROUP)["score"].idxmax()]
    chosen = picked.merge(best[[*GROUP, "sample"]], on=[*GROUP, "sample"])
    stats = chosen.groupby(GROUP).agg(
        **{f"{m}_{s}": (m, s) for m in metrics for s in ("mean", "std")},
        seeds=("seed", "nunique"),
        sample=("sample", "first"),
        label=("solver_label", "first"),
    )
    return stats.reset_index()
