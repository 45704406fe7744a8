"""The ledger: one Parquet row per (trial, attempt, checkpoint), the only record of what is done.

Layout (Hive-partitioned by study, readable by pandas, pyarrow, DuckDB, Polars)::

    <store>/study=<name>/batch-<utc>-<uuid>.parquet   appended per batch of finished trials
    <store>/study=<name>/part-<utc>-<uuid>.parquet    compacted batches
    <store>/study=<name>/.lock                        held by the driver running the study

The study is the partition: it lives in the folder name, not in the files
(schema version 2; version 0 and 1 files, which hold a ``study`` column,
stay readable), so ``pandas.read_parquet(store)`` and the other readers'
Hive discovery see one ``study`` column. :func:`read` adds it.

Every file is written to a temporary name, fsynced and renamed, so a reader
never sees half a file. Compaction writes one part holding a set of batches
and names them in its metadata before deleting them: a batch named by a part
is skipped by :func:`read`, so a crash between the rename and the deletes
neither loses nor duplicates a row (until :func:`repair` or the next
compaction deletes those batches, a reader of the raw files sees both).
Row values are never rewritten; a file that cannot be read, or comes from a
newer schema, is reported by path and never touched.

Measures computed later on a stored model (:mod:`shiftbench.store.artifacts`) land as rows with
status ``measured`` at the trial's final checkpoint; :func:`read` merges them into that
checkpoint's row (a reader of the raw files sees them as rows of their own).

All files of a study share one schema (the union of their columns): a batch
that brings a new column (a measure added, a resume) first rewrites the older
files with that column as nulls, one atomic rename each, so DuckDB, Polars,
pyarrow and pandas read the folder with every column and no options.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shiftbench import faults
from shiftbench.store import schema
from shiftbench.store.schema import (
    KEY_COLUMNS,
    MEASURE_COUNTS,
    MEASURE_PREFIXES,
    MEASURED,
)
from shiftbench.store.schema import MEASURE_ERRORS as ERRORS

SCHEMA_VERSION = 2
SOURCES_KEY = b"shiftbench.sources"
VERSION_KEY = b"shiftbench.schema_version"
REQUIRED_COLUMNS = (*KEY_COLUMNS, "status")
COMPACT_THRESHOLD = 32
SCAN_ATTEMPTS = 5
TMP_PATTERNS = (".batch-*.parquet.tmp", ".part-*.parquet.tmp")


class LedgerWarning(UserWarning):
    """A ledger file was skipped (unreadable or from an unknown schema)."""


def study_dir(store: str | Path, study: str) -> Path:
    return Path(store) / f"study={study}"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write, fsync and rename into place; a failed write (a full disk) leaves no temporary."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    faults.hit("store.tmp_written")
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _with_metadata(table: pa.Table, extra: dict[bytes, bytes]) -> pa.Table:
    return table.replace_schema_metadata(
        {
            **(table.schema.metadata or {}),
            VERSION_KEY: str(SCHEMA_VERSION).encode(),
            **extra,
        }
    )


def append(store: str | Path, study: str, rows: list[dict[str, Any]]) -> Path | None:
    """Write one batch of rows as a new file; returns its path (None for no rows).

    The rows' ``study`` (if given) must be ``study``: it becomes the partition folder.
    """
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    if "study" in frame:
        if set(frame["study"]) != {study}:
            raise ValueError(
                f"rows of studies {sorted(set(frame['study']))} appended to study {study!r}"
            )
        frame = frame.drop(columns="study")
    folder = study_dir(store, study)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"batch-{_stamp()}-{uuid.uuid4().hex[:8]}.parquet"
    table = _unify(folder, pa.Table.from_pandas(frame, preserve_index=False))
    _write_atomic(_with_metadata(table, {}), path)
    return path


def _current_schemas(folder: Path, skip: set[Path]) -> dict[Path, pa.Schema]:
    """The schemas (footers only) of the folder's readable files of this schema version."""
    schemas = {}
    for path in sorted(folder.glob("*.parquet")):
        if path in skip:
            continue
        try:
            schema = pq.read_schema(path)
        except Exception:  # unreadable files are reported by _scan and never touched
            continue
        meta = schema.metadata or {}
        if meta.get(VERSION_KEY) == str(SCHEMA_VERSION).encode() and all(
            c in schema.names for c in REQUIRED_COLUMNS
        ):
            schemas[path] = schema
    return schemas


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table with exactly ``schema``'s columns, in its order and types (a missing
    column is all nulls), keeping the table's shiftbench metadata."""
    columns = [
        table[f.name].cast(f.type)
        if f.name in table.column_names
        else pa.nulls(len(table), f.type)
        for f in schema
    ]
    meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != b"pandas"}
    return pa.Table.from_arrays(columns, schema=schema.with_metadata(meta))


def _unify(folder: Path, table: pa.Table, skip: frozenset[Path] = frozenset()) -> pa.Table:
    """Give the study's files and the new ``table`` one schema, the union of their columns.

    Readers of a folder of Parquet files take the first file's schema (DuckDB's and
    pyarrow's defaults, so pandas too) or refuse files that differ (Polars): a study whose
    files differ (a measure added, a resume with other columns) loses columns in them. So a
    table with a new column rewrites each older file with that column as nulls (atomically,
    one file at a time, every landed value unchanged), and a table lacking a column gets
    it as nulls. Types are promoted as :func:`pyarrow.unify_schemas` does (null or int to
    float); where they cannot be (text and numbers), files stay as they are, and
    :func:`read` still reads them all.
    """
    files = _current_schemas(folder, set(skip))
    plain = [s.remove_metadata() for s in (*files.values(), _without_study(table).schema)]
    try:
        schema = pa.unify_schemas(plain, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return table
    for path, old in files.items():
        if not old.remove_metadata().equals(schema):
            _write_atomic(_conform(pq.read_table(path), schema), path)
    return _conform(table, schema)


@dataclass
class LedgerFiles:
    """A study folder's readable files, the batches a part already holds, and the files
    that were skipped, with reasons."""

    tables: list[tuple[Path, pa.Table]] = field(default_factory=list)
    covered: list[Path] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)


def _check(table: pa.Table) -> tuple[str | None, list[str]]:
    """Why a table cannot be used (None if it can), and the batch names it holds."""
    meta = table.schema.metadata or {}
    try:
        version = int(meta.get(VERSION_KEY, b"0"))
        sources = json.loads(meta.get(SOURCES_KEY, b"[]"))
    except ValueError as exc:
        return f"bad shiftbench metadata ({exc})", []
    if version > SCHEMA_VERSION:
        return f"schema version {version} is newer than {SCHEMA_VERSION} (upgrade shiftbench)", []
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        return f"missing columns {', '.join(missing)}", []
    if not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
        return "bad shiftbench metadata (sources is not a list of names)", []
    return None, sources


def _scan(folder: Path) -> LedgerFiles:
    """The folder's files, read again from the start if a compaction deletes one meanwhile
    (its rows are then in a part the first listing did not have)."""
    for _ in range(SCAN_ATTEMPTS - 1):
        try:
            return _scan_once(folder)
        except FileNotFoundError:
            continue
    return _scan_once(folder)


def _scan_once(folder: Path) -> LedgerFiles:
    found = LedgerFiles()
    readable: list[tuple[Path, pa.Table]] = []
    covered: set[str] = set()
    for path in sorted(folder.glob("*.parquet")):
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise
        except Exception as exc:  # any unreadable file is reported, never fatal
            found.skipped[path] = f"unreadable Parquet ({type(exc).__name__}: {exc})"
            continue
        reason, sources = _check(table)
        if reason:
            found.skipped[path] = reason
            continue
        covered.update(sources)
        readable.append((path, table))
    for path, table in readable:
        if path.name in covered and path.name.startswith("batch-"):
            found.covered.append(path)
        else:
            found.tables.append((path, table))
    return found


def _without_study(table: pa.Table) -> pa.Table:
    """The table without the ``study`` column that schema versions 0 and 1 stored."""
    if "study" in table.column_names:
        return table.drop_columns("study")
    return table


def _with_study(table: pa.Table, study: str) -> pa.Table:
    """The table with its folder's study as the first column (the folder is the truth)."""
    column = pa.array([study] * table.num_rows, pa.large_string())
    return _without_study(table).add_column(0, "study", column)


def _frame(tables: list[pa.Table]) -> pd.DataFrame:
    if not tables:
        return pd.DataFrame(columns=["study", *REQUIRED_COLUMNS])
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. a column's type changed between files
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def read(store_dir: str | Path, study: str | None = None) -> pd.DataFrame:
    """Every ledger row of one study (or of all studies) as a DataFrame.

    Unreadable files are skipped with a :class:`LedgerWarning` naming the path.
    """
    store = Path(store_dir)
    folders = (
        [study_dir(store, study)]
        if study
        else sorted(p for p in store.glob("study=*") if p.is_dir())
    )
    tables = []
    for folder in folders:
        name = folder.name.removeprefix("study=")
        found = _scan(folder)
        for path, reason in found.skipped.items():
            warnings.warn(f"skipping ledger file {path}: {reason}", LedgerWarning, stacklevel=2)
        tables.extend(_with_study(t, name) for _, t in found.tables)
    return merge_measured(_frame(tables))


def merge_measured(ledger: pd.DataFrame) -> pd.DataFrame:
    """The ledger with each ``measured`` row merged into the checkpoint row it measures (same
    study, trial, attempt and step), oldest first: its measure values fill or replace that
    row's, its measure errors are added to the row's. A row measured with other
    ``measure_config`` settings than the row's own first loses its older measures, so every
    value on a row comes from the settings it records."""
    if "status" not in ledger or not (ledger["status"] == MEASURED).any():
        return ledger
    key = ["study", "trial_id", "attempt", "step"]
    is_measured = ledger["status"] == MEASURED
    measured = ledger[is_measured]
    if "end_time" in measured:
        measured = measured.sort_values("end_time", kind="stable")
    rows = ledger[~is_measured].set_index(key)
    columns = [c for c in rows if c.startswith(MEASURE_PREFIXES) or c in MEASURE_COUNTS]
    settings = schema.columns(columns, schema.MEASURE_CONFIG)
    values = schema.columns(columns, schema.MEASURE)
    for _, batch in measured.groupby(measured.groupby(key).cumcount(), sort=True):
        batch = batch.set_index(key)
        batch = batch[batch.index.isin(rows.index)]  # rows measuring a checkpoint not here go
        old, new = rows.loc[batch.index, settings], batch[settings]
        same = ((old == new) | (old.isna() & new.isna())).all(axis=1)
        changed = batch.index[old.notna().any(axis=1) & ~same]
        rows.loc[changed, [*values, *([ERRORS] if ERRORS in rows else [])]] = np.nan
        if ERRORS in batch:  # a checkpoint's errors keep every measure's reason
            before, given = rows.loc[batch.index, ERRORS], batch[ERRORS]
            both = before.notna() & given.notna()
            joined = before.astype(str) + "; " + given.astype(str)
            batch = batch.assign(**{ERRORS: given.where(~both, joined)})
        rows.update(batch[[c for c in [*columns, ERRORS] if c in batch]])
    return rows.reset_index()[ledger.columns]


def skipped_files(store_dir: str | Path, study: str) -> dict[Path, str]:
    """Ledger files of a study that cannot be read, with the reason."""
    return _scan(study_dir(store_dir, study)).skipped


def _delete(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
        faults.hit("store.batch_deleted")


def repair(store: str | Path, study: str) -> list[Path]:
    """Finish what a killed driver left: delete batches a part already holds and temporary
    files of interrupted writes. Call it only while holding the study's lock."""
    folder = study_dir(store, study)
    if not folder.is_dir():
        return []
    stale = [p for pattern in TMP_PATTERNS for p in folder.glob(pattern)]
    for path in stale:
        path.unlink(missing_ok=True)
    covered = _scan(folder).covered
    _delete(covered)
    return stale + covered


def compact(store: str | Path, study: str, threshold: int = 1) -> Path | None:
    """Merge the study's batch files into one part once there are ``threshold`` of them.

    Only readable batches of this schema are merged and deleted; skipped files stay as they
    are. Call it only while holding the study's lock.
    """
    folder = study_dir(store, study)
    if len(list(folder.glob("batch-*.parquet"))) < max(threshold, 1):
        return None  # cheap: no need to read the ledger
    found = _scan(folder)
    _delete(found.covered)
    batches = [(p, t) for p, t in found.tables if p.name.startswith("batch-")]
    if len(batches) < max(threshold, 1):
        return None
    try:
        merged = pa.concat_tables(
            [_without_study(t) for _, t in batches], promote_options="permissive"
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # column types disagree: the batches stay separate (and read correctly)
    merged = _unify(folder, merged, skip=frozenset(p for p, _ in batches))
    sources = json.dumps([p.name for p, _ in batches]).encode()
    path = folder / f"part-{_stamp()}-{uuid.uuid4().hex[:8]}.parquet"
    _write_atomic(_with_metadata(merged, {SOURCES_KEY: sources}), path)
    faults.hit("store.part_renamed")
    _delete([p for p, _ in batches])
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


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_full(exc: BaseException) -> bool:
    """Whether an error is a full disk or an exhausted quota (pyarrow raises these as an
    ``OSError`` with no errno, naming it in its text)."""
    return isinstance(exc, OSError) and (
        exc.errno in FULL_ERRNOS or any(os.strerror(n) in str(exc) for n in FULL_ERRNOS)
    )


def failure_reasons(
    ledger: pd.DataFrame, trial_ids: set[str] | None = None
) -> list[tuple[str, int, str]]:
    """Why trials failed: the last line of each failed (or timed-out) trial's latest error,
    as ``(reason, trials, one trial id)``, most frequent first. ``trial_ids`` restricts it to
    those trials (the study's own, when the ledger holds rows of trials it no longer has)."""
    rows = final_rows(ledger)
    rows = schema.with_status(rows, *schema.UNSUCCESSFUL)
    if trial_ids is not None:
        rows = rows[rows["trial_id"].isin(trial_ids)]
    if rows.empty:
        return []
    errors = rows.groupby("trial_id", sort=True)["error"].first().fillna("").astype(str)
    reasons = errors.map(lambda text: ["", *text.strip().splitlines()][-1].strip())
    table = (
        reasons.replace("", "(no error text)")
        .rename("reason")
        .reset_index()
        .groupby("reason", sort=False)["trial_id"]
        .agg(["size", "first"])
        .sort_values("size", ascending=False, kind="stable")
    )
    return [(reason, int(n), tid) for reason, (n, tid) in table.iterrows()]
