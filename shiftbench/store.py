"""The ledger: one Parquet row per (trial, attempt, checkpoint), the only record of what is done.

Layout (Hive-partitioned by study, readable by pandas, pyarrow, DuckDB, Polars)::

    <store>/study=<name>/batch-<utc>-<uuid>.parquet   appended per batch of finished trials
    <store>/study=<name>/part-<utc>-<uuid>.parquet    compacted batches
    <store>/study=<name>/.lock                        held by the driver running the study

Every file is written to a temporary name, fsynced and renamed, so a reader
never sees half a file. Compaction writes one part holding a set of batches
and names them in its metadata before deleting them: a batch named by a part
is skipped on read, so a crash between the rename and the deletes neither
loses nor duplicates a row. Rows are never rewritten; a file that cannot be
read is reported by path and left untouched.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1
SOURCES_KEY = b"shiftbench.sources"
VERSION_KEY = b"shiftbench.schema_version"
KEY_COLUMNS = ("trial_id", "attempt", "step")
COMPACT_THRESHOLD = 32


class LedgerWarning(UserWarning):
    """A ledger file was skipped (unreadable or from an unknown schema)."""


def study_dir(store: str | Path, study: str) -> Path:
    return Path(store) / f"study={study}"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _table(rows: list[dict[str, Any]], metadata: dict[bytes, bytes]) -> pa.Table:
    frame = pd.DataFrame(rows)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.replace_schema_metadata({
        **(table.schema.metadata or {}), VERSION_KEY: str(SCHEMA_VERSION).encode(), **metadata,
    })


def append(store: str | Path, study: str, rows: list[dict[str, Any]]) -> Path | None:
    """Write one batch of rows as a new file; returns its path (None for no rows)."""
    if not rows:
        return None
    folder = study_dir(store, study)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"batch-{_stamp()}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(_table(rows, {}), path)
    return path


@dataclass
class LedgerFiles:
    """The readable files of a study and the ones that were skipped, with reasons."""

    tables: list[tuple[Path, pa.Table]] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)


def _scan(folder: Path) -> LedgerFiles:
    found = LedgerFiles()
    covered: set[str] = set()
    for path in sorted(folder.glob("*.parquet")):
        try:
            table = pq.read_table(path)
        except Exception as exc:  # any unreadable file is reported, never fatal
            found.skipped[path] = f"unreadable Parquet ({type(exc).__name__}: {exc})"
            continue
        meta = table.schema.metadata or {}
        version = int(meta.get(VERSION_KEY, b"0"))
        missing = [c for c in ("study", *KEY_COLUMNS, "status") if c not in table.column_names]
        if version > SCHEMA_VERSION or missing:
            found.skipped[path] = (f"schema version {version} is newer than {SCHEMA_VERSION}"
                                   if version > SCHEMA_VERSION
                                   else f"missing columns {', '.join(missing)}")
            continue
        covered.update(json.loads(meta.get(SOURCES_KEY, b"[]")))
        found.tables.append((path, table))
    found.tables = [(p, t) for p, t in found.tables if p.name not in covered]
    return found


def _frame(tables: Iterable[pa.Table]) -> pd.DataFrame:
    tables = list(tables)
    if not tables:
        return pd.DataFrame(columns=["study", *KEY_COLUMNS, "status"])
    combined = pa.concat_tables(tables, promote_options="permissive")
    return combined.to_pandas()


def read(store_dir: str | Path, study: str | None = None) -> pd.DataFrame:
    """Every ledger row of one study (or of all studies) as a DataFrame.

    Unreadable files are skipped with a :class:`LedgerWarning` naming the path.
    """
    store = Path(store_dir)
    folders = ([study_dir(store, study)] if study
               else sorted(p for p in store.glob("study=*") if p.is_dir()))
    tables = []
    for folder in folders:
        found = _scan(folder)
        for path, reason in found.skipped.items():
            warnings.warn(f"skipping ledger file {path}: {reason}", LedgerWarning, stacklevel=2)
        tables.extend(t for _, t in found.tables)
    return _frame(tables)


def skipped_files(store_dir: str | Path, study: str) -> dict[Path, str]:
    """Ledger files of a study that cannot be read, with the reason."""
    return _scan(study_dir(store_dir, study)).skipped


def compact(store: str | Path, study: str, threshold: int = 1) -> Path | None:
    """Merge the study's batch files into one part once there are ``threshold`` of them."""
    folder = study_dir(store, study)
    found = _scan(folder)
    batches = [(p, t) for p, t in found.tables if p.name.startswith("batch-")]
    if len(batches) < max(threshold, 1):
        return None
    merged = pa.concat_tables([t for _, t in batches], promote_options="permissive")
    sources = json.dumps([p.name for p, _ in batches]).encode()
    merged = merged.replace_schema_metadata({
        **(merged.schema.metadata or {}), VERSION_KEY: str(SCHEMA_VERSION).encode(),
        SOURCES_KEY: sources,
    })
    path = folder / f"part-{_stamp()}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(merged, path)
    for source, _ in batches:
        source.unlink(missing_ok=True)
    return path


def trial_states(ledger: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its latest attempt's status and how many attempts it has had."""
    if ledger.empty:
        return pd.DataFrame(columns=["trial_id", "status", "attempts"])
    last = ledger.sort_values(["trial_id", "attempt"]).groupby("trial_id").tail(1)
    attempts = ledger.groupby("trial_id")["attempt"].max() + 1
    states = last[["trial_id", "status"]].set_index("trial_id")
    states["attempts"] = attempts
    return states.reset_index()


def final_rows(ledger: pd.DataFrame) -> pd.DataFrame:
    """The rows of each trial's latest attempt (what analyses read)."""
    if ledger.empty:
        return ledger
    latest = ledger.groupby("trial_id")["attempt"].transform("max")
    return ledger[ledger["attempt"] == latest].reset_index(drop=True)
