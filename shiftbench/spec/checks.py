"""The study file's checker: each check fails with one located line, ``file: key: message``
(:class:`StudyError`), before any trial runs. ``parse_study`` (``spec.study``) calls it on
the raw file and on the built design.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from shiftbench.data import seeds as data_seeds
from shiftbench.measures.config import MeasureConfig
from shiftbench.plugins import registry
from shiftbench.spec.search import Choice, Fixed, SpaceError, grid_samples, parse_space
from shiftbench.spec.settings import Model, SettingError, validate

if TYPE_CHECKING:
    from shiftbench.spec.study import Study

T = TypeVar("T")

# Line breaks (as str.splitlines sees them) are escaped so a message stays on one line.
_ONE_LINE = {ord(ch): repr(ch)[1:-1] for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class StudyError(ValueError):
    """A study file problem, located by file and key."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        text = f"{path}: {key}: {message}" if key else f"{path}: {message}"
        super().__init__(text.translate(_ONE_LINE))


def as_spaces(grid: Mapping[str, list[Any]]) -> dict[str, Choice]:
    """A grid of value lists as choice spaces, so grids expand as a search does."""
    return {key: Choice(tuple(values)) for key, values in grid.items()}


class Checker:
    """Validation helpers that fail with a located :class:`StudyError`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> None:
        raise StudyError(self.path, key, message)

    def mapping(self, value: Any, key: str, required: bool = False) -> None:
        if not isinstance(value, Mapping) or (required and not value):
            self.fail(key or "(top level)", "must be a mapping" + (" (not empty)" * required))

    def integer(self, value: Any, key: str, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def grid(self, grid: Any, key: str, cls: type) -> dict[str, list[Any]]:
        """``{param: value or list}`` checked against ``cls.parameters``; lists are grids."""
        self.mapping(grid, key)
        allowed = cls.parameters
        out = {}
        for param, value in grid.items():
            if param not in allowed:
                self.fail(
                    f"{key}.{param}", f"unknown parameter; allowed: {', '.join(sorted(allowed))}"
                )
            values = value if isinstance(value, list) else [value]
            if not values:
                self.fail(f"{key}.{param}", "empty grid")
            for v in values:
                self.same_type(v, allowed[param][0], f"{key}.{param}")
            out[param] = values
        return out

    def same_type(self, value: Any, default: Any, key: str) -> None:
        """A value must have the type of the parameter's default (ints pass for floats)."""
        if default is None:
            return
        if isinstance(default, bool | str):
            ok = type(value) is type(default)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        else:
            ok = True
        if not ok:
            self.fail(key, f"expected {type(default).__name__}, got {value!r}")

    def dataset_objectives(self, section: Any) -> tuple[Any, dict[str, Any]]:
        """Split each dataset entry's ``objective:`` sub-mapping (its objective overrides)
        from its dataset parameters."""
        if not isinstance(section, Mapping):
            return section, {}
        plain, overrides = {}, {}
        for name, grid in section.items():
            if isinstance(grid, Mapping) and "objective" in grid:
                overrides[name] = {} if grid["objective"] is None else grid["objective"]
                grid = {k: v for k, v in grid.items() if k != "objective"}
            plain[name] = grid
        return plain, overrides

    def objective_variants(self, variants: Any, key: str) -> tuple[dict[str, list[Any]], ...]:
        """A dataset's objective overrides: one grid, or a non-empty list of grids."""
        objective = registry.objective_class()
        if not isinstance(variants, list):
            return (self.grid(variants, key, objective),)
        if not variants:
            self.fail(key, "an empty list of objective variants")
        return tuple(self.grid(v, f"{key}[{i}]", objective) for i, v in enumerate(variants))

    def named_grids(self, section: Any, key: str, kind: str, lookup) -> dict[str, dict]:
        self.mapping(section, key, required=True)
        out = {}
        for name, grid in section.items():
            cls = self.plugin(lookup, name, f"{key}.{name}", kind)
            out[name] = self.grid(grid or {}, f"{key}.{name}", cls)
        return out

    def plugin(self, lookup, name: str, key: str, kind: str) -> type:
        try:
            return lookup(name)
        except KeyError:
            self.fail(key, f"unknown name; known {kind}: {', '.join(registry.names(kind))}")
        raise AssertionError("unreachable")

    def solvers(self, section: Any) -> dict[str, dict[str, Any]]:
        self.mapping(section, "solvers", required=True)
        out = {}
        for name, overrides in section.items():
            cls = self.plugin(registry.solver_class, name, f"solvers.{name}", "solvers")
            overrides = overrides or {}
            self.mapping(overrides, f"solvers.{name}")
            for param, spec in overrides.items():
                key = f"solvers.{name}.{param}"
                if param not in cls.parameters:
                    self.fail(
                        key,
                        f"unknown hyperparameter; allowed: {', '.join(sorted(cls.parameters))}",
                    )
                try:
                    space = parse_space(spec)
                except SpaceError as exc:
                    self.fail(key, str(exc))
                for v in space.grid() if isinstance(space, Fixed | Choice) else []:
                    self.same_type(v, cls.parameters[param][0], key)
            out[name] = dict(overrides)
        return out

    def names(self, value: Any, key: str, kind: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(key, "must be a list of names")
        known = registry.names(kind)
        for i, name in enumerate(value):
            if name not in known:
                self.fail(f"{key}[{i}]", f"unknown {kind} {name!r}; known: {', '.join(known)}")
        return tuple(value)

    def measures(self, value: Any) -> tuple[str, ...]:
        if value in ([], None):
            return ()
        from shiftbench.measures import core as measures

        known = measures.available()
        if value == "all":  # the generalization measures; optimizer probes are named one by one
            entries = measures.registry()
            return tuple(name for name in known if not entries[name].probe)
        if not isinstance(value, list):
            self.fail("measures", "must be a list of measure names or 'all'")
        for i, name in enumerate(value):
            if name not in known:
                self.fail(
                    f"measures[{i}]",
                    f"unknown measure {name!r}; see `shiftbench list` for the known measures",
                )
        return tuple(value)

    def measure_config(self, value: Any) -> MeasureConfig:
        """The study's :class:`shiftbench.measures.config.MeasureConfig`."""
        return self.config(value, "measure_config", MeasureConfig)

    def analysis_section(self, name: str, value: Any, analyses: tuple[str, ...]) -> dict[str, Any]:
        """``{field: value}`` of a study-file section that the study's analyses read
        (``score_config``), checked by building the frozen dataclass they declare for it
        (``SECTIONS = {name: cls}`` in the analysis module): the engine carries it without
        knowing whose it is."""
        if not value:
            return {}
        declared = [getattr(registry.analysis(a), "SECTIONS", {}).get(name) for a in analyses]
        classes = [cls for cls in declared if cls is not None]
        if not classes:
            listed = ", ".join(analyses) or "none"
            self.fail(name, f"no analysis of this study reads it (analyses: {listed})")
        self.config(value, name, classes[0])
        return dict(value)

    def config(self, value: Any, name: str, cls: type[T]) -> T:
        """The frozen dataclass ``cls`` built from the mapping ``value``, once, here: an
        unknown field, a wrong type or an impossible value fails located."""
        from dataclasses import fields

        self.mapping(value, name)
        allowed = {f.name: f.default for f in fields(cls)}
        for key, v in value.items():
            if key not in allowed:
                self.fail(f"{name}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
            self.same_type(v, allowed[key], f"{name}.{key}")
        try:
            return cls(**value)
        except ValueError as exc:
            self.fail(name, str(exc))
        raise AssertionError("unreachable")

    def settings(self, model: type[Model], values: Mapping[str, Any], where: str = "") -> Model:
        """A declarative section (:mod:`shiftbench.spec.settings`), failing located."""
        try:
            return validate(model, values, where)
        except SettingError as exc:
            self.fail(exc.key, exc.message)
        raise AssertionError("unreachable")

    def limit(self, study: Study, limit: int) -> None:
        """Refuse a study that expands to more than ``limit`` trials, naming the keys that
        multiply, before anything is expanded."""
        count, factors = study.trial_count()
        if count > limit:
            product = " x ".join(f"{key} ({n})" for key, n in factors)
            self.fail(
                "",
                f"expands to {count:,} trials, over the limit of {limit:,}: {product}; "
                f"if that is meant, set trial_limit: {count} in the study or pass "
                f"--trial-limit {count}",
            )

    def values(self, study: Study) -> None:
        """Instantiate each solver and dataset configuration and run its own checks, so an
        impossible value (negative lr, test_env out of range) stops the study now."""
        for name, overrides in study.solvers.items():
            cls = registry.solver_class(name)
            for param, spec in overrides.items():
                space = parse_space(spec)
                if study.search_kind == "grid" and not isinstance(space, Fixed | Choice):
                    self.fail(
                        f"solvers.{name}.{param}",
                        "grid search needs a value or a list of values, not a distribution",
                    )
                rng = np.random.default_rng(0)
                probes = (
                    space.grid()
                    if isinstance(space, Fixed | Choice)
                    else [space.sample(rng) for _ in range(16)]
                )
                for value in probes:
                    try:
                        registry.check_parameters(cls, {**registry.defaults(cls), param: value})
                    except ValueError as exc:
                        self.fail(f"solvers.{name}.{param}", str(exc))
        for name, grid in study.datasets.items():
            n_envs = len(getattr(registry.dataset_class(name), "environments", ()))
            for test_env in grid.get("test_env", []):
                if n_envs and not (isinstance(test_env, int) and 0 <= test_env < n_envs):
                    self.fail(
                        f"datasets.{name}.test_env",
                        f"must be in 0..{n_envs - 1}, got {test_env!r}",
                    )
            cls = registry.dataset_class(name)
            defaults = registry.defaults(cls)
            for params in grid_samples(as_spaces(grid)):
                if key := data_seeds.misplaced_seed({**defaults, **params}):
                    self.fail(f"datasets.{name}.{key}", data_seeds.UNFIXED)
                try:
                    registry.check_parameters(cls, {**defaults, **params})
                except ValueError as exc:
                    self.fail(f"datasets.{name}", str(exc))
            for val_env in grid.get("val_env", []):
                if n_envs and not (isinstance(val_env, int) and -1 <= val_env < n_envs):
                    self.fail(
                        f"datasets.{name}.val_env",
                        f"must be -1 (a main run) or in 0..{n_envs - 1}, got {val_env!r}",
                    )
            for fraction in grid.get("holdout_fraction", []):
                if not (isinstance(fraction, int | float) and 0.0 < fraction < 1.0):
                    self.fail(
                        f"datasets.{name}.holdout_fraction", f"must be in (0, 1), got {fraction!r}"
                    )
        objective = registry.objective_class()
        for dataset in study.datasets:
            key = (
                f"datasets.{dataset}.objective"
                if dataset in study.dataset_objectives
                else "objective"
            )
            for values in study.objective_samples(dataset):
                try:
                    registry.check_parameters(
                        objective, {**registry.defaults(objective), **values}
                    )
                except ValueError as exc:
                    self.fail(key, str(exc))
