"""The measures study's tidy table: one row per trained model, from the ledger.

Each done trial's final checkpoint gives one row with the hyperparameters that vary in the
study, the ``measure.*`` columns, and the targets the statistics score the measures against
(:mod:`shiftbench.studies.generalization_measures.stats`; lower is better for every target):

- ``gap_iid`` = train_acc - id_acc (the held-out part of the training environment);
- for each environment not trained on, named by the dataset (``rotate-30``, ``fog-3``):
  ``gap_ood_<shift>`` = train_acc - env<i>_acc and ``err_ood_<shift>`` = 1 - env<i>_acc.

A model whose training accuracy is below 99% did not fit its training set (Jiang et al.
2020 train to a cross-entropy target and discard such models): it keeps its row, flagged
``converged = False``, and :meth:`MeasureTable.models` leaves it out by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pandas as pd

from shiftbench.plugins import registry
from shiftbench.store import ledger as store
from shiftbench.store import schema

CONVERGED_ACC = 0.99
HPARAM_PREFIXES = schema.CONFIG_PREFIXES
NOT_HPARAMS = frozenset({"ds.test_env", "ds.shifts", "ds.data_home", "obj.eval_every"})
"""Columns that choose what is evaluated or where data lives, not the trained model."""


@dataclass(frozen=True)
class EnvironmentInfo:
    """What a dataset configuration says about its environments: their names, how many
    test examples back the ID target, and each environment's size."""

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    n_id: int


Describe = Callable[[str, tuple[tuple[str, Any], ...]], EnvironmentInfo | None]


@cache
def describe_environments(
    dataset: str, params: tuple[tuple[str, Any], ...]
) -> EnvironmentInfo | None:
    """Load a dataset configuration (cached) to read its environments; None when its data
    is not on this machine (targets are then named ``env<i>`` and sign errors are skipped)."""
    try:
        instance = registry.dataset_class(dataset).get_instance(**dict(params))
        data = instance.get_data()["data"]
    except (OSError, ValueError):
        return None
    sizes = tuple(len(env) for env in data.environments)
    n_id = sum(int(sizes[i] * data.holdout_fraction) for i in data.training_indices)
    return EnvironmentInfo(tuple(data.env_names), sizes, n_id)


@dataclass(frozen=True)
class MeasureTable:
    """Every done model of a study, with the column roles the analyses need.

    ``hparams`` are the varying hyperparameter columns (without ``seed``, the replicate);
    ``n_test`` maps each target to the number of test examples it was measured on (missing
    when unknown).
    """

    frame: pd.DataFrame
    hparams: tuple[str, ...]
    measures: tuple[str, ...]
    shifts: tuple[str, ...]
    n_test: dict[str, int]

    @property
    def targets(self) -> tuple[str, ...]:
        """``gap_iid``, then ``gap_ood_<shift>`` and ``err_ood_<shift>`` per shift."""
        return (*self.gap_targets, *(f"err_ood_{s}" for s in self.shifts))

    @property
    def gap_targets(self) -> tuple[str, ...]:
        """``gap_iid`` and the shifted gaps, in environment order."""
        return ("gap_iid", *(f"gap_ood_{s}" for s in self.shifts))

    def models(self, converged_only: bool = True) -> pd.DataFrame:
        """The rows the statistics use: converged models only, unless asked otherwise."""
        return self.frame[self.frame["converged"]] if converged_only else self.frame

    @property
    def n_unconverged(self) -> int:
        return int((~self.frame["converged"]).sum())


def final_checkpoints(ledger: pd.DataFrame) -> pd.DataFrame:
    """The last checkpoint of each done trial's latest attempt."""
    rows = store.final_rows(ledger)
    rows = schema.with_status(rows, schema.DONE)
    last = rows.groupby("trial_id")["step"].transform("max")
    return rows[rows["step"] == last].drop_duplicates("trial_id").reset_index(drop=True)


def varying_hparams(frame: pd.DataFrame) -> list[str]:
    """Hyperparameter columns with more than one non-missing value (``solver`` included;
    a solver-specific column such as ``hp.momentum`` is missing elsewhere, not varying)."""
    candidates = [
        c for c in frame.columns if c.startswith(HPARAM_PREFIXES) and c not in NOT_HPARAMS
    ]
    return [c for c in ["solver", *candidates] if c in frame and frame[c].nunique() > 1]


def build(ledger: pd.DataFrame, describe: Describe = describe_environments) -> MeasureTable:
    """The table of a study's ledger; ``describe`` names each dataset's environments."""
    final = final_checkpoints(ledger)
    hparams = varying_hparams(final)
    measures = sorted(schema.columns(final, schema.MEASURE))
    measures = [c for c in measures if pd.api.types.is_numeric_dtype(final[c])]
    parts, shifts, n_test = [], [], {}
    ds_columns = schema.columns(final, schema.DATASET)
    for keys, part in final.groupby(["dataset", *ds_columns], dropna=False, sort=False):
        params = tuple((c[3:], _plain(v)) for c, v in zip(ds_columns, keys[1:]) if _known(v))
        info = describe(keys[0], params)
        targets = _targets(part, info, n_test)
        shifts += [s for s in targets if s not in shifts]
        parts.append(part.assign(**_target_columns(part, targets)))
    frame = pd.concat(parts, ignore_index=True) if parts else final
    frame = frame.assign(converged=frame["train_acc"] >= CONVERGED_ACC)
    columns = ["trial_id", "dataset", *hparams, "seed", "converged", "step", "train_loss"]
    columns += ["train_acc", "id_acc", *measures, "gap_iid"]
    columns += [f"{kind}_ood_{s}" for kind in ("gap", "err") for s in shifts]
    frame = frame[columns].reset_index(drop=True)
    return MeasureTable(frame, tuple(hparams), tuple(measures), tuple(shifts), n_test)


def _targets(part: pd.DataFrame, info: EnvironmentInfo | None, n_test: dict) -> dict[str, str]:
    """Shift name -> its accuracy column, for the environments this group was evaluated on
    (and the test-set sizes into ``n_test``, keeping the smallest if groups disagree)."""
    out = {}
    for column in sorted(c for c in part.columns if _env_index(c) is not None):
        if part[column].isna().all():
            continue
        i = _env_index(column)
        name = info.names[i] if info else f"env{i}"
        out[name] = column
        if info:
            for target in (f"gap_ood_{name}", f"err_ood_{name}"):
                n_test[target] = min(n_test.get(target, math.inf), info.sizes[i])
    if info:
        n_test["gap_iid"] = min(n_test.get("gap_iid", math.inf), info.n_id)
    return dict(sorted(out.items(), key=lambda kv: _env_index(kv[1])))


def _target_columns(part: pd.DataFrame, targets: dict[str, str]) -> dict[str, pd.Series]:
    columns = {"gap_iid": part["train_acc"] - part["id_acc"]}
    for name, acc in targets.items():
        columns[f"gap_ood_{name}"] = part["train_acc"] - part[acc]
        columns[f"err_ood_{name}"] = 1.0 - part[acc]
    return columns


def _env_index(column: str) -> int | None:
    """i for a column ``env<i>_acc`` (an environment not trained on), else None."""
    parsed = schema.parse_env_column(column)
    return parsed[0] if parsed and parsed[1] == "acc" else None


def _known(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A NumPy scalar from a DataFrame as the Python value a plugin parameter expects."""
    return value.item() if hasattr(value, "item") else value


FAMILIES = {
    "norms": "norm",
    "spectral": "spectral",
    "margin": "margin/path",
    "pac_bayes": "PAC-Bayes",
    "sharpness": "sharpness",
    "optimization": "optimization",
    "calibration": "calibration",
    "information": "information criteria",
    "input_gradient": "input gradient",
}
"""Registry family -> the family's name in Nakai et al.'s comparison."""


def family(column: str) -> str:
    """The measure family of a ``measure.<name>`` column (``other`` if not registered)."""
    from shiftbench.measures import core as measures

    entry = measures.registry().get(short(column))
    return FAMILIES.get(entry.family, entry.family) if entry else "other"


def direction(column: str) -> int:
    """The declared direction of a ``measure.<name>`` column (+1 if not registered; see
    :class:`shiftbench.measures.core.Measure`)."""
    from shiftbench.measures import core as measures

    entry = measures.registry().get(short(column))
    return entry.direction if entry else 1


def short(column: str) -> str:
    """A measure column's display name: ``measure.l2`` -> ``l2``."""
    return schema.unprefixed(schema.MEASURE, column)


def wide(scores: pd.DataFrame, value: str, targets: tuple[str, ...]) -> pd.DataFrame:
    """A long score table (``measure``, ``target``, ``value``) as measure x target, in the
    given target order, measures in their original order and shown by short name."""
    table = scores.pivot(index="measure", columns="target", values=value)
    table = table.loc[scores["measure"].drop_duplicates(), list(targets)]
    return table.rename(index=short).rename_axis(index="measure", columns=None).reset_index()
