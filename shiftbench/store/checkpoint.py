"""Resume inside a trial: its whole training state, saved every ``checkpoint_every`` steps.

A study with ``checkpoint_every: N`` has each trial that runs past step N save, at every
N-th step, the model, the optimizer (a :class:`~shiftbench.rotations.RotatedOptimizer`'s
rotation state included; a vectorized ensemble's stacked weights and moments), the step
(the learning-rate schedule is a function of it), the RNG states (Python, NumPy, torch, CUDA
and the data sampler's generator) and the evaluation curve so far. The next run of the study
resumes a trial that was killed from that state, so its numbers are an uninterrupted run's.

One file per trial (an ensemble: per group, in its first member's folder), beside the
trial's model artifacts::

    <store>/study=<name>/_artifacts/<trial_id>/resume/checkpoint.safetensors

written atomically (:func:`shiftbench.store.artifacts.write_atomic`). It holds no pickle: its
tensors are safetensors tensors, and everything else (optimizer hyperparameters, the Python
and NumPy RNG states, the curve) is JSON in the file's metadata, with each tensor replaced by
a reference to it. A trial's checkpoints are removed once its rows land in the ledger,
unless the study keeps checkpoints (``keep: checkpoints``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftbench import faults
from shiftbench.store import artifacts
from shiftbench.store import ledger as ledger_store

FOLDER = "resume"
NAME = "checkpoint"
_TAG = "$"  # marks an encoded value; a dict with such a key is stored as a list of pairs


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be resumed from; the message names its path."""


def checkpoint_url(store: str | os.PathLike, study: str, trial_ids: Sequence[str]) -> str:
    """The checkpoint of one trial, or of an ensemble of trials (in its first member's
    folder, named by all its members: another grouping of them starts afresh)."""
    root = f"{artifacts.study_root(store, study)}/{trial_ids[0]}/{FOLDER}"
    if len(trial_ids) == 1:
        return f"{root}/{NAME}{artifacts.SUFFIX}"
    members = hashlib.sha256(",".join(trial_ids).encode()).hexdigest()[:16]
    return f"{root}/{NAME}-{members}{artifacts.SUFFIX}"


def rng_state() -> dict[str, Any]:
    """The global RNG states a training step may draw from (dropout, augmentation)."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def encode(state: Any) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` (nested dicts, lists and tuples of tensors, arrays and JSON scalars) as
    safetensors tensors and a JSON text that refers to them."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = value
            return {_TAG: "tensor", "key": key}
        if isinstance(value, np.ndarray):
            key = str(len(tensors))
            tensors[key] = torch.from_numpy(value.astype(np.int64, copy=False))
            return {_TAG: "array", "key": key, "dtype": value.dtype.str}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, tuple):
            return {_TAG: "tuple", "items": [walk(v) for v in value]}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            if all(isinstance(k, str) and k != _TAG for k in value):
                return {k: walk(v) for k, v in value.items()}
            return {_TAG: "dict", "items": [[walk(k), walk(v)] for k, v in value.items()]}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint")

    return tensors, json.dumps(walk(state))


def decode(tensors: dict[str, torch.Tensor], text: str) -> Any:
    """The state :func:`encode` encoded."""

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(v) for v in value]
        if not isinstance(value, dict):
            return value
        kind = value.get(_TAG)
        if kind == "tensor":
            return tensors[value["key"]]
        if kind == "array":
            return tensors[value["key"]].numpy().astype(np.dtype(value["dtype"]))
        if kind == "tuple":
            return tuple(walk(v) for v in value["items"])
        if kind == "dict":
            return {walk(k): walk(v) for k, v in value["items"]}
        return {k: walk(v) for k, v in value.items()}

    return walk(json.loads(text))


@dataclass(frozen=True)
class Checkpoints:
    """Where a trial (or an ensemble) saves and finds its checkpoint, and how often: every
    ``every`` steps. Picklable, so a worker builds it from the study's settings."""

    url: str
    every: int
    trial_ids: tuple[str, ...]

    @classmethod
    def of(
        cls, store: str | os.PathLike, study: str, trial_ids: Sequence[str], every: int
    ) -> Checkpoints:
        return cls(checkpoint_url(store, study, trial_ids), every, tuple(trial_ids))

    def due(self, step: int, steps: int) -> bool:
        """Whether the state after ``step`` steps is saved (never at 0 or at the end)."""
        return 0 < step < steps and step % self.every == 0

    def save(self, state: dict[str, Any], step: int) -> None:
        """Write ``state`` (the training state after ``step`` steps) atomically. On a full
        disk the trial trains on, with a warning: only its resumability is lost (the last
        saved state, if any, stays whole)."""
        tensors, text = encode(state)
        metadata = {"trial_ids": ",".join(self.trial_ids), "step": str(step), "state": text}
        try:
            artifacts.write_atomic(self.url, artifacts._serialize(tensors, metadata))
        except OSError as exc:
            if not ledger_store.is_full(exc):
                raise
            warnings.warn(
                f"training state at step {step} not saved to {self.url}: disk full ({exc})",
                RuntimeWarning,
                stacklevel=2,
            )
            return
        faults.hit("checkpoint.saved", self.trial_ids[0])

    def load(self) -> tuple[int, dict[str, Any]] | None:
        """The saved step and state, or None when there is no checkpoint; a checkpoint that
        is corrupt or another trial's is an error naming its path (and is left in place)."""
        fs, path = artifacts._fs(self.url)
        if not fs.exists(path):
            return None
        try:
            tensors, metadata = artifacts.load_state(self.url)
        except artifacts.ArtifactError as exc:
            raise CheckpointError(f"{exc}; remove it to start the trial afresh") from None
        if metadata.get("trial_ids") != ",".join(self.trial_ids):
            raise CheckpointError(
                f"checkpoint {self.url} is of trials {metadata.get('trial_ids')!r}, not "
                f"{','.join(self.trial_ids)!r}; remove it to start the trial afresh"
            )
        return int(metadata["step"]), decode(tensors, metadata["state"])


def remove(store: str | os.PathLike, study: str, trial_ids: Iterable[str]) -> None:
    """Delete the checkpoints of these trials (their rows have landed), and a trial's folder
    if nothing else (no model) is in it."""
    for trial_id in set(trial_ids):
        fs, path = artifacts._fs(f"{artifacts.study_root(store, study)}/{trial_id}/{FOLDER}")
        if fs.isdir(path):
            fs.rm(path, recursive=True)
            folder = path.rsplit("/", 1)[0]
            if not fs.ls(folder):
                fs.rmdir(folder)
