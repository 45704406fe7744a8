"""The declarative parts of a study file, as pydantic models: how its trials are searched
(``search``, ``seeds``) and how they run (:class:`RunSettings`: retries, resources,
timeout, ensembles, fast path, stored models, trial limit). What a trial computes
(datasets, objective, solvers, measures) is checked against the plugins in
:mod:`shiftbench.spec.study`.

A run setting never enters a trial's id: changing one reruns nothing. Every invalid value
is the same one line as before, ``<file>: <key>: <message>`` (:func:`validate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from shiftbench.store import artifacts
from shiftbench.trials.accel import ACCEL_KEYS, AUTO, Accel

# A study is counted before it is expanded: above this many trials it is refused (a grid with
# one list too many is a typo that would take minutes and gigabytes to expand).
DEFAULT_TRIAL_LIMIT = 100_000
# How a random search draws sample i: ``per_seed`` (the default) draws it anew for every trial
# seed, as DomainBed does (``scripts/train.py``: ``hparams_registry.random_hparams(algorithm,
# dataset, misc.seed_hash(args.hparams_seed, args.trial_seed))``; Naganuma et al.'s fork, line
# 78, the same), so the selection protocol picks the best sample within each trial seed;
# ``shared`` keeps one draw of sample i across the trial seeds (shiftbench before 2026-12).
HPARAMS_DRAWS = ("per_seed", "shared")
Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class Resources:
    """What one trial asks of a worker (fractional GPUs let trials share a GPU). With
    ``pack_gpus`` (``gpus: auto``) the sweep measures a first trial's peak GPU memory alone
    on a GPU and packs as many trials per GPU as fit (``gpus`` is then that fraction)."""

    cpus: float = 1.0
    gpus: float = 0.0
    pack_gpus: bool = False


def integer(minimum: int) -> BeforeValidator:
    """An int (not a bool) >= ``minimum``."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}, got {value!r}")
        return value

    return BeforeValidator(check)


def _amount(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        allowed = "a number >= 0, or auto" if key == "gpus" else "a number >= 0"
        raise KeyedError(key, f"must be {allowed}, got {value!r}")
    return float(value)


def _resources(value: Any) -> Resources:
    if isinstance(value, Resources):
        return value
    _mapping(value)
    for key in sorted(set(value) - {"cpus", "gpus"}, key=str):
        raise KeyedError(str(key), "unknown key; allowed: cpus, gpus")
    if value.get("gpus") == "auto":
        return Resources(cpus=_amount("cpus", value.get("cpus", 1.0)), gpus=1.0, pack_gpus=True)
    return Resources(**{k: _amount(k, v) for k, v in value.items()})


def _accel(value: Any) -> Accel:
    if isinstance(value, Accel):
        return value
    _mapping(value)
    for key in value:
        if key not in ACCEL_KEYS:
            raise KeyedError(str(key), f"unknown key; allowed: {', '.join(ACCEL_KEYS)}")
        try:
            Accel(**{key: value[key]})
        except ValueError as exc:
            raise KeyedError(key, str(exc)) from None
    return Accel(**value)


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a number of seconds > 0, got {value!r}")
    return float(value)


def _ensemble(value: Any) -> str | int:
    if isinstance(value, bool):  # YAML reads a bare off/on as a boolean
        return "auto" if value else "off"
    if value in ("auto", "off"):
        return value
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"must be auto, off or an integer >= 1, got {value!r}")
    return value


def _keep(value: Any) -> str:
    if value not in artifacts.KEEP:
        raise ValueError(f"must be one of {', '.join(artifacts.KEEP)}, got {value!r}")
    return value


def _mapping(value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping")


class KeyedError(ValueError):
    """A problem with one key inside the value being validated (``resources.gpus``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class RunSettings(BaseModel):
    """How a study's trials run; none of it is part of a trial's identity."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    retries: Annotated[int, integer(0)] = 2
    resources: Annotated[Resources, BeforeValidator(_resources)] = Resources()
    timeout_s: Annotated[float | None, BeforeValidator(_timeout)] = None
    ensemble: Annotated[str | int, BeforeValidator(_ensemble)] = "auto"
    accel: Annotated[Accel, BeforeValidator(_accel)] = AUTO
    trial_limit: Annotated[int, integer(1)] = DEFAULT_TRIAL_LIMIT
    # trained models stored beside the rows (artifacts.KEEP); the study's default depends on
    # whether it computes measures (artifacts.default_keep)
    keep: Annotated[str, BeforeValidator(_keep)] = "none"
    # steps between a trial's saved training states (shiftbench.store.checkpoint; 0: none)
    checkpoint_every: Annotated[int, integer(0)] = 0

    KEYS: ClassVar[tuple[str, ...]] = (
        "retries",
        "resources",
        "timeout_s",
        "ensemble",
        "accel",
        "trial_limit",
        "keep",
        "checkpoint_every",
    )


class Search(BaseModel):
    """How each solver's hyperparameters are drawn: ``random`` samples per solver (seeded by
    ``seed``; ``hparams``: drawn per trial seed or shared, :data:`HPARAMS_DRAWS`), or the
    ``grid`` of its lists."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Annotated[str, BeforeValidator(lambda v: _choice(v, ("random", "grid")))] = "random"
    trials_per_solver: Annotated[int, integer(1)] = 4
    seed: Annotated[int, integer(0)] = 0
    # random search: sample i drawn per trial seed (DomainBed's) or shared (HPARAMS_DRAWS)
    hparams: Annotated[str, BeforeValidator(_hparams_draw)] = "per_seed"


def _hparams_draw(value: Any) -> str:
    if value not in HPARAMS_DRAWS:
        raise ValueError(f"must be one of {', '.join(HPARAMS_DRAWS)}, got {value!r}")
    return value


def _choice(value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        quoted = " or ".join(repr(a) for a in allowed)
        raise ValueError(f"must be {quoted}, got {value!r}")
    return value


def _seeds(value: Any) -> tuple[int, ...]:
    if not (isinstance(value, list) and value):
        raise ValueError("a non-empty list of integers")
    check = integer(0).func
    for i, seed in enumerate(value):
        try:
            check(seed)
        except ValueError as exc:
            raise KeyedError(f"[{i}]", str(exc)) from None
    if len(set(value)) != len(value):
        raise ValueError("seeds must be distinct")
    return tuple(value)


class Seeds(BaseModel):
    """The trial seeds: every configuration runs once per seed."""

    model_config = ConfigDict(frozen=True)

    seeds: Annotated[tuple[int, ...], BeforeValidator(_seeds)] = (0,)


def validate(model: type[Model], values: Mapping[str, Any], where: str = "") -> Model:
    """``model`` built from ``values``, or a :class:`SettingError` on the first problem, named
    by its key as the study file spells it (``search.kind``, ``resources.gpus``,
    ``seeds[0]``); ``where`` is the section's own key (``search``), empty at the top level."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        error = exc.errors()[0]
        path = [str(part) for part in error["loc"]]
        cause = error.get("ctx", {}).get("error")
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(model.model_fields))
            message = f"unknown key; allowed: {allowed}"
        else:
            message = str(cause) if cause is not None else error["msg"]
        if isinstance(cause, KeyedError):
            path.append(cause.key)
        key = ".".join(filter(None, [where, *path])).replace(".[", "[")
        raise SettingError(key, message) from None


class SettingError(ValueError):
    """An invalid setting, by key; :mod:`shiftbench.spec.study` adds the file."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message
