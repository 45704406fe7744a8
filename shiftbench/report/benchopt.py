"""Benchopt's result columns, derived from ledger rows, so ``benchopt plot`` can show a sweep.

Benchopt reads ``objective_*`` metric columns, ``solver_name``, ``data_name``,
``objective_name``, ``p_solver_*`` / ``p_dataset_*`` / ``p_obj_*`` parameters,
``time``, ``stop_val`` (here the step) and ``idx_rep`` (here the seed). The
ledger keeps its own names; this view renames and adds, never changes numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shiftbench.plugins.files import benchmark_root
from shiftbench.store import schema

METRICS = (
    "train_loss",
    "train_acc",
    "id_acc",
    "id_loss",
    "ood_acc",
    "ood_loss",
    "oracle_acc",
    "test_in_acc",
    "avg_test_acc",
)


def _label(name: str, row: pd.Series, prefix: str) -> str:
    params = ",".join(
        f"{schema.unprefixed(prefix, c)}={row[c]}"
        for c in schema.columns(row.index, prefix)
        if pd.notna(row[c])
    )
    return f"{name}[{params}]"


def result_path(name: Path) -> Path:
    """Where an exported result file goes: the benchmark's ``outputs/`` folder, since
    ``benchopt plot`` (1.10, ``Benchmark.get_result_files``) lists result files only there
    and refuses any ``-f`` file while that folder has none. ``name`` is a file name, or a
    path inside that folder."""
    folder = benchmark_root() / "outputs"
    if len(name.parts) == 1:
        return folder / name
    if name.resolve().parent == folder.resolve():
        return name.resolve()
    raise ValueError(
        f"{name}: give a file name; it is written in {folder}, where `benchopt plot` reads"
    )


def to_benchopt(ledger: pd.DataFrame) -> pd.DataFrame:
    """Checkpoint rows of finished trials with Benchopt's result columns added."""
    rows = schema.with_status(ledger[ledger["step"] >= 0], *schema.FINISHED).copy()
    if rows.empty:
        return rows
    metrics = [m for m in METRICS if m in rows]
    out = pd.DataFrame({f"objective_{m}": rows[m] for m in metrics}, index=rows.index)
    out["objective_value"] = rows["train_loss"]
    out["solver_name"] = rows["solver_label"]
    out["data_name"] = rows.apply(lambda r: _label(r["dataset"], r, schema.DATASET), axis=1)
    out["objective_name"] = rows.apply(lambda r: _label("shiftbench", r, schema.OBJECTIVE), axis=1)
    for prefix, bench_prefix in (
        (schema.HPARAM, "p_solver_"),
        (schema.DATASET, "p_dataset_"),
        (schema.OBJECTIVE, "p_obj_"),
    ):
        for column in (c for c in rows if c.startswith(prefix)):
            out[bench_prefix + schema.unprefixed(prefix, column)] = rows[column]
    out["time"] = rows["time"]
    out["stop_val"] = rows["step"]
    out["idx_rep"] = rows["seed"]
    out["run_date"] = pd.to_datetime(rows["start_time"]).dt.strftime("%Y-%m-%dT%H:%M:%S")
    return pd.concat([rows[["study", "trial_id"]], out], axis=1).reset_index(drop=True)
