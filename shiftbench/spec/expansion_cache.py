"""A cache of each study file's validated expansion (name, retries, trial ids), so that
``shiftbench status`` answers in about a second, even for a million trials: the ids are one
NumPy column of 64-bit integers (:func:`shiftbench.spec.study.id_numbers`), 8 MB a million.

Validating and expanding a study loads the plugins, which import torch and Benchopt
(seconds), while the counts need only the trial ids. An entry's key is a hash of everything
the expansion depends on: the study file's bytes, the ``--trial-limit`` given, and every
source file of the benchmark (``objective.py`` and the plugin folders) and of the engine
(``shiftbench/``): any edit makes a new key, so an entry is never stale. Entries live in
``$SHIFTBENCH_CACHE`` (default ``~/.cache/shiftbench``) and are written atomically; a cache
that cannot be read or written is not used, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftbench import __version__
from shiftbench.plugins.files import KINDS, benchmark_root

CACHE_ENV = "SHIFTBENCH_CACHE"


@dataclass(frozen=True, eq=False)
class Expansion:
    """What ``status`` needs of a study: its name, its retries and its trials' ids (as
    :func:`shiftbench.spec.study.id_numbers`); its measures and their full ``MeasureConfig``
    settings (to tell which are missing)."""

    name: str
    retries: int
    trial_numbers: np.ndarray
    measures: tuple[str, ...] = ()
    measure_settings: dict[str, Any] = field(default_factory=dict)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "shiftbench")


def _key(study_file: Path, trial_limit: int | None) -> str:
    """The hash of the study file, the limit and every source file the expansion runs."""
    digest = hashlib.sha256(f"{__version__}\0{trial_limit}\0".encode())
    digest.update(study_file.read_bytes())
    root = benchmark_root()
    sources = [
        root / "objective.py",
        *(path for kind in KINDS for path in sorted((root / kind).glob("*.py"))),
        *sorted(Path(__file__).resolve().parents[1].rglob("*.py")),
    ]
    for path in sources:
        digest.update(f"\0{path}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def lookup(study_file: str | Path, trial_limit: int | None = None) -> Expansion | None:
    """The cached expansion of this exact study file and code, or None."""
    try:
        path = cache_dir() / f"{_key(Path(study_file), trial_limit)}.npz"
        with np.load(path, allow_pickle=False) as data:
            measures = json.loads(str(data["measures"]))
            return Expansion(
                str(data["name"]),
                int(data["retries"]),
                data["trial_numbers"].astype(np.uint64),
                tuple(measures["names"]),
                dict(measures["settings"]),
            )
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def remember(study_file: str | Path, trial_limit: int | None, study) -> Expansion:
    """Expand a validated :class:`shiftbench.spec.study.Study` and cache the result."""
    expansion = Expansion(
        study.name,
        study.retries,
        study.trial_numbers,
        study.measures,
        asdict(study.measure_config),
    )
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_key(Path(study_file), trial_limit)}.npz"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as out:
            np.savez(
                out,
                name=np.str_(expansion.name),
                retries=np.int64(expansion.retries),
                trial_numbers=expansion.trial_numbers,
                measures=np.str_(
                    json.dumps(
                        {"names": expansion.measures, "settings": expansion.measure_settings}
                    )
                ),
            )
        os.replace(tmp, path)
    except OSError:
        pass
    return expansion
