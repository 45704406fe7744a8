"""Where downloaded data sets live, and one clear error line when their files are missing.

The data home is, in order: the explicit ``data_home`` argument (a dataset
plugin's parameter), ``$SHIFTBENCH_DATA``, Benchopt's configured data path
when running inside ``benchopt run``, else ``~/data``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

ENV_VAR = "SHIFTBENCH_DATA"
DEFAULT_HOME = "~/data"


class MissingDataError(FileNotFoundError):
    """A data set's files are not where the loader looked; the message says where to get them."""


def benchopt_data_home() -> Path | None:
    """Benchopt's data path, or None outside a running Benchopt benchmark."""
    try:
        from benchopt.benchmark import get_running_benchmark
        from benchopt.config import get_data_path
    except ImportError:
        return None
    if get_running_benchmark() is None:
        return None
    return Path(get_data_path())


def data_home(explicit: str | os.PathLike | None = None) -> Path:
    """The folder holding all downloaded data sets (see the module docstring for the order)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return benchopt_data_home() or Path(DEFAULT_HOME).expanduser()


def require_files(dataset: str, root: Path, names: Iterable[str], source: str) -> Path:
    """Return ``root`` if every ``root/name`` exists, else raise one line saying what to do.

    The message names the data set, the first missing path and where to get the files.
    """
    for name in names:
        path = root / name
        if not path.exists():
            raise MissingDataError(
                f"{dataset}: data not found at {path}; get it from {source} and place it "
                f"under {root} (or set data_home / ${ENV_VAR})"
            )
    return root
