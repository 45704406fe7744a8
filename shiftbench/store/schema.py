"""The ledger's row schema, in one place: status values, column prefixes, the per-environment
columns, the solver label and the one row builder every writer uses (the runner, the
vectorized ensemble, the objective's metrics, the fast-path settings, the measures).
Readers filter by status and strip prefixes through the helpers here.

A trial writes one row per checkpoint (a failed trial: one row at step -1)::

    study, trial_id, attempt, status, error          the trial and how it ended
    dataset, ds.*, obj.*, solver, solver_label, hp.* its config (``ds.``/``obj.``/``hp.``)
    seed, sample, config                             its seed, search sample, config JSON
    step, time, epoch, env<i>_<metric>, ...           the checkpoint (objective metrics)
    accel.*, search.*, device, hostname, ...          where and how it ran (PROVENANCE, WORKER)
    measure.*, measure_config.*, n_*_examples         measures, at the final checkpoint
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from shiftbench.trials.trial import Trial

DONE = "done"
DIVERGED = "diverged"
FAILED = "failed"
TIMEOUT = "timeout"
PENDING = "pending"
# a row of measures computed later on a stored model; read() merges it into the trial's row
MEASURED = "measured"
STATUSES = (DONE, DIVERGED, FAILED, TIMEOUT, PENDING)
FINISHED = (DONE, DIVERGED)  # ran to its end: never run again
UNSUCCESSFUL = (FAILED, TIMEOUT)  # run again, up to the study's retry limit

DATASET = "ds."
OBJECTIVE = "obj."
HPARAM = "hp."
ACCEL = "accel."
SEARCH = "search."  # how a random search drew the hyperparameters (search.hparams)
MEASURE = "measure."
MEASURE_CONFIG = "measure_config."
CONFIG_PREFIXES = (DATASET, OBJECTIVE, HPARAM)
MEASURE_PREFIXES = (MEASURE, MEASURE_CONFIG)
KEY_COLUMNS = ("trial_id", "attempt", "step")
MEASURE_COUNTS = ("n_train_examples", "n_measure_examples", "n_iid_test_examples")
MEASURE_ERRORS = "measure_errors"
# where and how a row was computed: the code and libraries (trials.provenance), the host and
# device (the runner), and the Ray node of the worker that ran it (trials.worker)
PROVENANCE = (
    "shiftbench_version",
    "git_commit",
    "git_dirty",
    "torch_version",
    "python_version",
    "hostname",
    "device",
)
WORKER = ("ray_node",)

_ENV_COLUMN = re.compile(r"env(\d+)_(\w+)")


def prefixed(prefix: str, values: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``{prefix + key: value}``: the ledger columns of one group (hyperparameters, ...)."""
    items = values.items() if isinstance(values, Mapping) else values
    return {f"{prefix}{k}": v for k, v in items}


def unprefixed(prefix: str, column: str) -> str:
    """The name of a prefixed column without its prefix (``hp.lr`` -> ``lr``)."""
    return column.removeprefix(prefix)


def columns(frame: pd.DataFrame | Iterable[str], prefix: str | tuple[str, ...]) -> list[str]:
    """The columns of ``frame`` that start with ``prefix`` (one or several), in order."""
    names = frame.columns if isinstance(frame, pd.DataFrame) else frame
    return [c for c in names if c.startswith(prefix) and c != prefix]


def provenance(**values: Any) -> dict[str, Any]:
    """Provenance columns by name: each must be one of :data:`PROVENANCE` or :data:`WORKER`,
    so no writer adds a provenance column the schema does not name."""
    unknown = sorted(set(values) - {*PROVENANCE, *WORKER})
    if unknown:
        raise KeyError(f"not provenance columns of the ledger schema: {', '.join(unknown)}")
    return values


def env_column(env: int, metric: str) -> str:
    """The column of one environment's metric, e.g. ``env2_in_acc``."""
    return f"env{env}_{metric}"


def parse_env_column(column: str) -> tuple[int, str] | None:
    """``(environment, metric)`` of a per-environment column, or None for any other column."""
    match = _ENV_COLUMN.fullmatch(column)
    return (int(match[1]), match[2]) if match else None


def with_status(ledger: pd.DataFrame, *statuses: str) -> pd.DataFrame:
    """The rows whose status is one of ``statuses``."""
    return ledger[ledger["status"].isin(statuses)]


def solver_label(solver: str, params: Iterable[tuple[str, Any]]) -> str:
    """Benchopt-style name, e.g. ``adam[lr=0.001,weight_decay=0.0]``."""
    inner = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params)
    return f"{solver}[{inner}]"


def checkpoint(step: int, elapsed: float, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One point of a trial's curve: its step, training time so far and the objective's
    metrics (``train_loss``, ``id_acc``, ``env<i>_*``, ...)."""
    return {"step": step, "time": elapsed, **metrics}


def trial_rows(
    trial: Trial,
    study: str,
    attempt: int,
    status: str,
    error: str,
    curve: list[dict[str, Any]],
    extra: dict[str, Any],
    started: datetime,
    provenance: dict[str, Any],
) -> list[dict[str, Any]]:
    """One row per checkpoint (a failed trial: one row at step -1), final extras on the last."""
    base = {
        "study": study,
        "trial_id": trial.trial_id,
        "attempt": attempt,
        "status": status,
        "error": error,
        "dataset": trial.dataset,
        **prefixed(DATASET, trial.dataset_params),
        **prefixed(OBJECTIVE, trial.objective_params),
        "solver": trial.solver,
        "solver_label": solver_label(trial.solver, trial.solver_params),
        **prefixed(HPARAM, trial.solver_params),
        "seed": trial.seed,
        "sample": trial.sample,
        **provenance,
        "start_time": started,
        "end_time": datetime.now(UTC),
        "config": trial.config_json,
    }
    rows = [{**base, **point} for point in curve or [{"step": -1}]]
    rows[-1].update(extra)
    return rows


def measured_row(
    trial_id: str,
    study: str,
    attempt: int,
    step: int,
    measures: dict[str, Any],
    started: datetime,
    provenance: dict[str, Any],
) -> dict[str, Any]:
    """A row of measures computed later on a trial's stored model (status ``measured``), at
    its final checkpoint ``step``; :func:`shiftbench.store.read` merges it into that row."""
    return {
        "study": study,
        "trial_id": trial_id,
        "attempt": attempt,
        "step": step,
        "status": MEASURED,
        **provenance,
        "start_time": started,
        "end_time": datetime.now(UTC),
        **measures,
    }


def measure_columns(
    values: Mapping[str, float],
    settings: Mapping[str, Any],
    counts: Mapping[str, int],
    reasons: Mapping[str, str],
) -> dict[str, Any]:
    """The final checkpoint's measure columns: values, the settings that computed them, the
    sizes of the data they saw (:data:`MEASURE_COUNTS`) and why any is undefined."""
    out: dict[str, Any] = {f"{MEASURE}{k}": float(v) for k, v in values.items()}
    out.update({name: counts[name] for name in MEASURE_COUNTS if name in counts})
    out.update(prefixed(MEASURE_CONFIG, settings))
    if reasons:
        out[MEASURE_ERRORS] = "; ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
    return out
