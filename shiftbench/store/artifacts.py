"""Trained models as results: each trial's weights in safetensors, beside its ledger rows.

Layout (under the ledger's study folder, so removing the study's folder removes its models
too; the leading ``_`` hides it from Parquet readers' Hive discovery)::

    <store>/study=<name>/_artifacts/<trial_id>/<attempt>/final.safetensors
    <store>/study=<name>/_artifacts/<trial_id>/<attempt>/step-<N>.safetensors  (checkpoints)

A study's ``keep`` key chooses what is stored: ``none``, ``final`` (the default of a study
with measures) or ``checkpoints`` (every evaluation checkpoint, and the final weights).
Initial weights are not stored: the objective's ``build_model`` seeds the initialization
with the trial's seed, so it is rebuilt exactly. Each file's safetensors metadata holds the
trial's canonical config, so :func:`load_model` rebuilds the architecture from the file.

Paths go through fsspec, so a shared file system or an object-store URL works with the same
code; workers write their trials' files themselves. Each file is written to a temporary name
(``.<name>.tmp-<uuid>``) and renamed, so a reader never takes a half-written file for whole;
:func:`repair` deletes temporaries a killed writer left. A file that fails
:func:`check` is reported by path and never deleted.
"""

from __future__ import annotations

import json
import os
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from shiftbench import faults
from shiftbench.store import ledger as ledger_store
from shiftbench.store import schema

KEEP = ("none", "final", "checkpoints")
FOLDER = "_artifacts"
FINAL = "final"
SUFFIX = ".safetensors"
TMP_MARK = ".tmp-"
HEADER_BYTES = 8  # safetensors: little-endian u64 header length, then the JSON header


class ArtifactError(RuntimeError):
    """A stored model cannot be used (missing or corrupt); the message names the path."""


def default_keep(measures: tuple[str, ...]) -> str:
    """What a study keeps unless it says: the final weights where it computes measures (so a
    measure added later is computed on them), else nothing."""
    return FINAL if measures else "none"


def study_root(store: str | os.PathLike, study: str) -> str:
    """The study's artifact folder (a local path or a URL)."""
    return f"{os.fspath(store).rstrip('/')}/study={study}/{FOLDER}"


def trial_root(store: str | os.PathLike, study: str, trial_id: str, attempt: int) -> str:
    return f"{study_root(store, study)}/{trial_id}/{attempt}"


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A found path as the user names it: a plain path on the local file system."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


@dataclass(frozen=True)
class Sink:
    """Where and what a worker stores: the ledger's store (path or URL), the ``keep``
    setting and the study's ``checkpoint_every`` (0: trials save no training state, see
    :mod:`shiftbench.store.checkpoint`). Picklable, so Ray sends it to every worker."""

    store: str
    keep: str = FINAL
    checkpoint_every: int = 0

    def save(
        self,
        study: str,
        trial: Any,
        attempt: int,
        name: str,
        state: dict[str, Any],
        step: int,
    ) -> str:
        """Write one model's ``state`` (a ``state_dict``) for ``trial``; returns its path."""
        metadata = {
            "study": study,
            "trial_id": trial.trial_id,
            "attempt": str(attempt),
            "step": str(step),
            "config": trial.config_json,
        }
        url = f"{trial_root(self.store, study, trial.trial_id, attempt)}/{name}{SUFFIX}"
        write_atomic(url, _serialize(state, metadata))
        return url


def _serialize(state: dict[str, Any], metadata: dict[str, str]) -> bytes:
    from safetensors.torch import save

    # cloned: safetensors refuses tensors that share memory (tied weights) or are strided
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    return save(tensors, metadata=metadata)


def write_atomic(url: str, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``url`` and rename it into place (fsynced on
    a local file system); a write that fails removes its temporary."""
    fs, path = _fs(url)
    folder, name = path.rsplit("/", 1)
    fs.makedirs(folder, exist_ok=True)
    tmp = f"{folder}/.{name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    try:
        if isinstance(fs, LocalFileSystem):
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        else:
            with fs.open(tmp, "wb") as handle:
                handle.write(data)
    except BaseException:  # a full disk: no half file stays behind
        if fs.exists(tmp):
            fs.rm_file(tmp)
        raise
    faults.hit("artifacts.tmp_written")
    fs.mv(tmp, path)


def trial_paths(store: str | os.PathLike, study: str, trial_id: str) -> dict[int, list[str]]:
    """A trial's stored files by attempt (the final weights and any checkpoints)."""
    fs, root = _fs(f"{study_root(store, study)}/{trial_id}")
    if not fs.isdir(root):
        return {}
    found: dict[int, list[str]] = {}
    for path in sorted(fs.find(root)):
        attempt, name = path[len(root) + 1 :].split("/", 1)
        if name.endswith(SUFFIX) and TMP_MARK not in name and attempt.isdigit():
            found.setdefault(int(attempt), []).append(_url(fs, path))
    return found


def final_path(store: str | os.PathLike, study: str, trial_id: str, attempt: int) -> str | None:
    """The final weights of one attempt, or None if they were not stored."""
    url = f"{trial_root(store, study, trial_id, attempt)}/{FINAL}{SUFFIX}"
    fs, path = _fs(url)
    return url if fs.exists(path) else None


def check(url: str) -> str | None:
    """Why a stored file is not a whole safetensors file (None if it is): its header is read
    and its size compared with the end of the last tensor, without reading the tensors."""
    fs, path = _fs(url)
    try:
        size = fs.size(path)
        with fs.open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(HEADER_BYTES))
            if length > size:
                return f"header length {length} exceeds the file's {size} bytes"
            header = json.loads(handle.read(length))
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
            default=0,
        )
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        return f"unreadable ({type(exc).__name__}: {exc})"
    if HEADER_BYTES + length + end != size:
        return f"{size} bytes, the header describes {HEADER_BYTES + length + end}"
    return None


def load_state(url: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A stored file's tensors and metadata; an :class:`ArtifactError` naming the path if the
    file is missing or corrupt (the file is left as it is)."""
    from safetensors.torch import load

    fs, path = _fs(url)
    if not fs.exists(path):
        raise ArtifactError(f"no stored model {url}")
    reason = check(url)
    if reason:
        raise ArtifactError(f"corrupt model artifact {url}: {reason} (left in place)")
    data = fs.cat_file(path)
    try:
        tensors = load(data)
        (length,) = struct.unpack("<Q", data[:HEADER_BYTES])
        metadata = json.loads(data[HEADER_BYTES : HEADER_BYTES + length]).get("__metadata__", {})
    except Exception as exc:
        raise ArtifactError(f"corrupt model artifact {url}: {exc} (left in place)") from None
    return tensors, metadata


def load_model(
    store: str | os.PathLike,
    study: str,
    trial_id: str,
    attempt: int | None = None,
    name: str = FINAL,
    device: str = "cpu",
):
    """The trial's trained model (a ``torch.nn.Module`` in eval mode), rebuilt from the config
    stored with its weights: the latest attempt's final weights unless told otherwise."""
    from shiftbench.trials.runner import TrialRunner
    from shiftbench.trials.trial import Trial

    attempts = trial_paths(store, study, trial_id)
    if not attempts:
        raise ArtifactError(
            f"no stored model for trial {trial_id} in {study_root(store, study)} "
            "(the study's keep setting was none when it ran)"
        )
    attempt = max(attempts) if attempt is None else attempt
    state, metadata = load_state(f"{trial_root(store, study, trial_id, attempt)}/{name}{SUFFIX}")
    trial = Trial.from_config(json.loads(metadata["config"]))
    model = TrialRunner({}, device=device).objective(trial).build_model()
    model.load_state_dict(state)
    return model.eval()


def sizes(store: str | os.PathLike, study: str) -> dict[str, int]:
    """Bytes stored per trial (every attempt and checkpoint; temporaries excluded)."""
    fs, root = _fs(study_root(store, study))
    if not fs.isdir(root):
        return {}
    per_trial: dict[str, int] = {}
    for path, info in fs.find(root, detail=True).items():
        if TMP_MARK in path.rsplit("/", 1)[-1]:
            continue
        trial_id = path[len(root) + 1 :].split("/", 1)[0]
        per_trial[trial_id] = per_trial.get(trial_id, 0) + int(info["size"])
    return per_trial


def size_line(store: str | os.PathLike, study: str) -> str | None:
    """One line: the study's stored models, in total and per trial (None if there are none)."""
    per_trial = sizes(store, study)
    if not per_trial:
        return None
    total = sum(per_trial.values())
    return (
        f"models: {len(per_trial)} trials, {_human(total)} in {study_root(store, study)} "
        f"({_human(total / len(per_trial))} per trial)"
    )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} TiB"


def corrupt(store: str | os.PathLike, study: str) -> dict[str, str]:
    """The study's stored files that fail :func:`check`, with the reason."""
    fs, root = _fs(study_root(store, study))
    if not fs.isdir(root):
        return {}
    found = {}
    for path in sorted(fs.find(root)):
        name = path.rsplit("/", 1)[-1]
        if name.endswith(SUFFIX) and TMP_MARK not in name:
            url = _url(fs, path)
            reason = check(url)
            if reason:
                found[url] = reason
    return found


def repair(store: str | os.PathLike, study: str) -> list[str]:
    """Delete the temporary files of interrupted writes (call it while holding the study's
    lock: no writer is running); returns them."""
    fs, root = _fs(study_root(store, study))
    if not fs.isdir(root):
        return []
    stale = [p for p in sorted(fs.find(root)) if TMP_MARK in p.rsplit("/", 1)[-1]]
    for path in stale:
        fs.rm_file(path)
    return [_url(fs, p) for p in stale]


@dataclass(frozen=True)
class Gap:
    """A done trial's measures that its final row lacks, its final checkpoint, its training
    loss history and its stored final weights (None: not stored)."""

    trial_id: str
    attempt: int
    step: int
    names: tuple[str, ...]
    history: tuple[tuple[int, float], ...]
    path: str | None


def missing_measures(row: pd.Series, names: tuple[str, ...], settings: dict[str, Any]) -> list:
    """The measures of ``names`` a trial's final row lacks: all of them if it records other
    ``measure_config`` settings than ``settings``, else those with neither a value nor a
    recorded reason (``measure_errors``) for having none."""
    recorded = {k: row.get(f"measure_config.{k}") for k in settings}
    if any(pd.notna(recorded[k]) and recorded[k] != v for k, v in settings.items()):
        return list(names)
    errors = row.get(schema.MEASURE_ERRORS)
    explained = {
        part.split(":", 1)[0].strip() for part in (errors.split("; ") if pd.notna(errors) else [])
    }
    return [n for n in names if pd.isna(row.get(schema.MEASURE + n)) and n not in explained]


def measure_gaps(
    store: str | os.PathLike,
    study: str,
    ledger: pd.DataFrame,
    done: Iterable[str],
    names: tuple[str, ...],
    settings: dict[str, Any],
) -> list[Gap]:
    """The ``done`` trials (ids) whose final rows lack some of ``names`` computed with the
    ``measure_config`` ``settings`` (a full ``MeasureConfig`` as a dict)."""
    if not names:
        return []
    rows = ledger_store.final_rows(ledger)
    rows = rows[rows["trial_id"].isin(set(done))].sort_values("step", kind="stable")
    gaps = []
    for trial_id, curve in rows.groupby("trial_id", sort=True):
        final = curve.iloc[-1]
        missing = missing_measures(final, names, settings)
        if missing:
            attempt = int(final["attempt"])
            gaps.append(
                Gap(
                    str(trial_id),
                    attempt,
                    int(final["step"]),
                    tuple(missing),
                    tuple(zip(curve["step"].astype(int), curve["train_loss"].astype(float))),
                    final_path(store, study, str(trial_id), attempt),
                )
            )
    return gaps
