"""Study files: parse and validate ``benchmarks/<study>.yml``, then expand it into trials.

Every problem is found before any trial runs and reported as one line that
names the file, the key and what is allowed (:class:`StudyError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shiftbench.data import seeds as data_seeds
from shiftbench.plugins import registry
from shiftbench.spec.search import (
    Choice,
    Fixed,
    SpaceError,
    grid_samples,
    parse_space,
    random_samples,
)
from shiftbench.spec.settings import (
    Model,
    Resources,
    RunSettings,
    Search,
    Seeds,
    SettingError,
    validate,
)
from shiftbench.store import artifacts, schema
from shiftbench.trials.accel import Accel
from shiftbench.trials.trial import ID_LENGTH, Trial

TOP_LEVEL_KEYS = {
    "name": "the study's name (letters, digits, _ and -)",
    "description": "free text",
    "datasets": "mapping: dataset name -> {parameter: value or list}",
    "objective": "mapping: objective parameter -> value or list",
    "solvers": "mapping: solver name -> {hyperparameter: value, list or distribution}",
    "search": "mapping with kind (random|grid), trials_per_solver, seed, hparams "
    "(per_seed|shared)",
    "seeds": "list of integer trial seeds",
    "measures": "list of measure names, or 'all' (every measure but the optimizer probes)",
    "measure_config": "mapping: MeasureConfig field (bisection_depth, subset, ...) -> value",
    "score_config": "mapping: ScoreConfig field (min_ess, quantile, bootstrap, ...) -> value",
    "analyses": "list of analysis names",
    "retries": "how often a failed trial is retried (integer >= 0)",
    "resources": "mapping with cpus and gpus per trial (gpus: a fraction, or auto: packed by "
    "a first trial's measured peak memory)",
    "accel": "mapping: precision (auto|fp32|bf16), channels_last (auto|true|false), "
    "compile (false|true|backend), flush_denormal (auto|true|false)",
    "timeout_s": "wall-clock limit of one trial in seconds (number > 0; default: none)",
    "ensemble": "vectorized ensembles: auto (default), off, or the largest group size",
    "trial_limit": "the most trials the study may expand to (integer >= 1; default 100000)",
    "keep": "trained models stored: none, final or checkpoints (default: final for a study "
    "with measures, else none)",
    "checkpoint_every": "steps between a trial's saved training states, from which a killed "
    "trial resumes (integer >= 0; default 0: none saved)",
}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_RESOLVED_KEPT = 65_536  # resolved dataset parameters an expansion keeps for reuse
_ID_BYTES = ID_LENGTH // 2  # a trial id is the first 8 bytes of its SHA-256, in hex
# Line breaks (as str.splitlines sees them) are escaped so a message stays on one line.
_ONE_LINE = {ord(ch): repr(ch)[1:-1] for ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


class StudyError(ValueError):
    """A study file problem, located by file and key."""

    def __init__(self, path: Path | str, key: str, message: str) -> None:
        self.path, self.key, self.message = str(path), key, message
        text = f"{path}: {key}: {message}" if key else f"{path}: {message}"
        super().__init__(text.translate(_ONE_LINE))


@dataclass(frozen=True)
class Study:
    """A validated study: its design (what each trial computes: datasets, objective,
    solvers, search, seeds, measures), how it runs (:attr:`run`, a
    :class:`~shiftbench.spec.settings.RunSettings`; none of it enters a trial's id) and what
    it reports (analyses, ``score_config``)."""

    path: Path
    name: str
    description: str
    datasets: dict[str, dict[str, list[Any]]]
    objective: dict[str, list[Any]]
    solvers: dict[str, dict[str, Any]]
    search_kind: str
    trials_per_solver: int
    search_seed: int
    seeds: tuple[int, ...]
    measures: tuple[str, ...]
    analyses: tuple[str, ...]
    run: RunSettings = field(default_factory=RunSettings)
    # MeasureConfig fields for the measures computed at the end of each trial
    measure_config: dict[str, Any] = field(default_factory=dict)
    # shiftbench.stats.ScoreConfig fields for the measures study's statistics
    score_config: dict[str, Any] = field(default_factory=dict)
    # dataset -> its ``objective:`` variants (one mapping, or a list of them), each
    # overriding ``objective`` keys for it
    dataset_objectives: dict[str, tuple[dict[str, list[Any]], ...]] = field(default_factory=dict)
    # random search: sample i drawn per trial seed (DomainBed's) or shared (HPARAMS_DRAWS)
    hparams_draw: str = "per_seed"

    @property
    def retries(self) -> int:
        return self.run.retries

    @property
    def resources(self) -> Resources:
        return self.run.resources

    @property
    def timeout_s(self) -> float | None:
        return self.run.timeout_s

    @property
    def ensemble(self) -> str | int:
        return self.run.ensemble

    @property
    def accel(self) -> Accel:
        return self.run.accel

    @property
    def keep(self) -> str:
        return self.run.keep

    @property
    def checkpoint_every(self) -> int:
        return self.run.checkpoint_every

    def objective_grids(self, dataset: str) -> list[dict[str, list[Any]]]:
        """The objective grids of one dataset: the study's, with each of the dataset's
        override variants (a list of variants is the union of their grids, as a list of
        dicts is in scikit-learn's ``ParameterGrid``; so a ViT and a ResNet can each
        have their own sizes on the same data)."""
        variants = self.dataset_objectives.get(dataset, ({},))
        return [{**self.objective, **variant} for variant in variants]

    def objective_samples(self, dataset: str) -> list[dict[str, Any]]:
        """Every objective configuration of one dataset, in the grids' order."""
        return [
            values
            for grid in self.objective_grids(dataset)
            for values in grid_samples(_as_spaces(grid))
        ]

    def trials(self) -> list[Trial]:
        """Every trial of the study, in a stable order (grouped by data set)."""
        return list(self.iter_trials())

    def iter_trials(self, skip: Container[int] = frozenset()) -> Iterator[Trial]:
        """The trials of :meth:`trials`, built one at a time (a run holds only the ones it
        dispatches, not a million), leaving out those whose id number
        (:func:`id_numbers`) is in ``skip`` without building them."""
        seen: set[int] = set()
        for text, parts in self._configs():
            number = _id_number(text)
            # Equal configs (a repeated grid value, a fully fixed random search) are one
            # trial: the ledger must never hold it twice.
            if number not in seen and number not in skip:
                seen.add(number)
                yield Trial.make(*parts)

    @cached_property
    def trial_numbers(self) -> np.ndarray:
        """The ids of :meth:`trials` as unsigned 64-bit integers (:func:`id_numbers`), in
        the same order, without building a :class:`Trial`: each id hashes the canonical JSON
        (:attr:`Trial.config_json`) assembled from per-part fragments, 8 bytes per trial."""
        numbers = np.fromiter((_id_number(text) for text, _ in self._configs()), np.uint64)
        _, first = np.unique(numbers, return_index=True)
        numbers = numbers[np.sort(first)]
        numbers.flags.writeable = False
        return numbers

    def _configs(self) -> Iterator[tuple[str, tuple]]:
        """Each trial's canonical JSON (equal to :attr:`Trial.config_json`, whose keys
        ``json.dumps(sort_keys=True)`` orders dataset, dataset_params, objective_params, seed,
        solver, solver_params) and its :meth:`Trial.make` arguments, in expansion order,
        duplicates included. Each part's JSON is made once, not once per trial."""
        objective_defaults = registry.defaults(registry.objective_class())
        for dataset, dataset_grid in self.datasets.items():
            dataset_cls = registry.dataset_class(dataset)
            dataset_defaults = registry.defaults(dataset_cls)
            domainbed_name = getattr(dataset_cls, "domainbed_name", dataset)
            head = f'{{"dataset":{_dumps(dataset)},"dataset_params":'
            for dataset_params in grid_samples(_as_spaces(dataset_grid)):
                params = {**dataset_defaults, **dataset_params}
                if _self_validating(params):
                    continue
                # the resolved seeds depend on (algorithm, sample, seed) only: made once each
                # (up to a bound on what is kept)
                resolved: dict[tuple[str, int, int], tuple[dict, str]] = {}
                for objective_params in self.objective_samples(dataset):
                    objective = {**objective_defaults, **objective_params}
                    algorithm, objective = objective["algorithm"], _without_seed(objective)
                    middle = f',"objective_params":{_dumps(objective)},"seed":'
                    for solver, overrides in self.solvers.items():
                        # sample i at each trial seed, with its JSON tail, made once per solver
                        tails = {
                            seed: [
                                (
                                    hparams,
                                    f',"solver":{_dumps(solver)},'
                                    f'"solver_params":{_dumps(hparams)}}}',
                                )
                                for hparams in self.solver_samples(
                                    dataset, solver, overrides, seed
                                )
                            ]
                            for seed in self.seeds
                        }
                        for index in range(len(tails[self.seeds[0]])):
                            for seed in self.seeds:
                                hparams, tail = tails[seed][index]
                                key = algorithm, index, seed
                                if key not in resolved:
                                    if len(resolved) >= _RESOLVED_KEPT:
                                        resolved.clear()
                                    data = data_seeds.resolve(
                                        domainbed_name, params, algorithm, index, seed
                                    )
                                    resolved[key] = data, _dumps(data)
                                data, data_json = resolved[key]
                                text = f"{head}{data_json}{middle}{int(seed)}{tail}"
                                yield (
                                    text,
                                    (dataset, data, objective, solver, hparams, seed, index),
                                )

    def trial_count(self) -> tuple[int, list[tuple[str, int]]]:
        """How many trials :meth:`trials` makes at most (equal configs are one trial), counted
        from the grid sizes without building any, and the keys with more than one value (the
        ones that multiply), each with its number of values."""
        factors: dict[str, int] = {}

        def size(key: str, n: int) -> int:
            if n > 1:
                factors[key] = n
            return n

        per_solver = 0
        for solver, overrides in self.solvers.items():
            if self.search_kind == "random":
                per_solver += size("search.trials_per_solver", self.trials_per_solver)
                continue
            n = 1
            for param, spec in overrides.items():
                space = parse_space(spec)
                count = len(space.grid()) if isinstance(space, Fixed | Choice) else 1
                n *= size(f"solvers.{solver}.{param}", count)
            per_solver += n
        total = 0
        for dataset, grid in self.datasets.items():
            n_data = 1
            for param, values in grid.items():
                n_data *= size(f"datasets.{dataset}.{param}", len(values))
            n_objective = 0
            for variant in self.dataset_objectives.get(dataset, ({},)):
                n = 1
                for param, values in {**self.objective, **variant}.items():
                    prefix = f"datasets.{dataset}.objective" if param in variant else "objective"
                    n *= size(f"{prefix}.{param}", len(values))
                n_objective += n
            total += n_data * n_objective * per_solver
        total *= size("seeds", len(self.seeds))
        order = ("datasets.", "objective.", "solvers.", "search.", "seeds")  # expansion order
        keys = sorted(
            factors, key=lambda k: next(i for i, p in enumerate(order) if k.startswith(p))
        )
        return total, [(key, factors[key]) for key in keys]

    def check_data(self, trials: Iterable[Trial]) -> None:
        """Run the ``check_data()`` hook (a plugin's cheap check that its files are there) of
        each dataset configuration these trials load, so missing data stops the study in one
        line naming the path and where to get it, before any trial starts, instead of
        failing every trial."""
        for dataset, params in dict.fromkeys(t.data_key for t in trials):
            cls = registry.dataset_class(dataset)
            if hasattr(cls, "check_data"):
                try:
                    cls.get_instance(**dict(params)).check_data()
                except (FileNotFoundError, ValueError) as exc:
                    raise StudyError(self.path, f"datasets.{dataset}", str(exc)) from None

    def solver_samples(
        self, dataset: str, solver: str, overrides: dict, trial_seed: int
    ) -> list[dict]:
        """The hyperparameter configurations of one solver at one trial seed (full, defaults
        filled in); under random search with ``hparams_draw == "per_seed"`` each trial seed
        has its own draw (:data:`HPARAMS_DRAWS`)."""
        cls = registry.solver_class(solver)
        base = registry.defaults(cls)
        if self.search_kind == "grid":
            spaces = {k: parse_space(v) for k, v in overrides.items()}
            return [cls.trial_params({**base, **s}) for s in grid_samples(spaces)]
        spaces = {**cls.search_space, **{k: parse_space(v) for k, v in overrides.items()}}
        samples = random_samples(
            spaces,
            self.trials_per_solver,
            seed=self.search_seed,
            scope=(dataset, solver),
            trial_seed=trial_seed if self.hparams_draw == "per_seed" else None,
        )
        return [cls.trial_params({**base, **s}) for s in samples]

    def search_columns(self) -> dict[str, str]:
        """Ledger columns naming how the search drew the trials' hyperparameters (a random
        search's ``search.hparams``, :data:`HPARAMS_DRAWS`; none for a grid)."""
        random = self.search_kind == "random"
        return {f"{schema.SEARCH}hparams": self.hparams_draw} if random else {}


def _as_spaces(grid: Mapping[str, list[Any]]) -> dict[str, Choice]:
    return {key: Choice(tuple(values)) for key, values in grid.items()}


def _self_validating(params: dict[str, Any]) -> bool:
    """A leave-one-domain-out companion that would validate on its own test environment
    (``val_env == test_env``): not a run (DomainBed's ``test_envs`` pairs are distinct)."""
    return params.get("val_env", -1) == params.get("test_env")


def _id_number(config_json: str) -> int:
    """The id number (:func:`id_numbers`) of the trial with this canonical JSON."""
    return int.from_bytes(hashlib.sha256(config_json.encode()).digest()[:_ID_BYTES], "big")


def _dumps(value: Any) -> str:
    """JSON as :attr:`Trial.config_json` writes it (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def id_numbers(trial_ids: Iterable[str]) -> np.ndarray:
    """Trial ids (16 hex digits, :data:`shiftbench.trials.trial.ID_LENGTH`) as unsigned 64-bit
    integers: 8 bytes a trial where a Python string takes about 65."""
    return np.fromiter((int(tid, 16) for tid in trial_ids), dtype=np.uint64)


def in_study(trial_ids: Iterable[str], numbers: np.ndarray) -> np.ndarray:
    """Which of these trial ids are among a study's id ``numbers`` (a boolean mask), found
    without a string or a :class:`Trial` per study trial: a binary search of each in the
    sorted numbers (``np.isin`` hashes all of them, seconds at a million)."""
    wanted, ordered = id_numbers(trial_ids), np.sort(numbers)
    if not len(ordered):
        return np.zeros(len(wanted), dtype=bool)
    found = ordered[np.minimum(np.searchsorted(ordered, wanted), len(ordered) - 1)]
    return found == wanted


def id_strings(numbers: np.ndarray) -> list[str]:
    """The inverse of :func:`id_numbers`."""
    return [f"{int(n):0{ID_LENGTH}x}" for n in numbers]


def _without_seed(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "seed"}


def load_study(path: str | Path, trial_limit: int | None = None) -> Study:
    """Read and validate a study file; raises :class:`StudyError` on the first problem.

    ``trial_limit`` (the CLI's ``--trial-limit``) overrides the study's ``trial_limit``."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(path, "", "no such study file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise StudyError(path, where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_study(raw, path, trial_limit)


def parse_study(raw: Any, path: Path, trial_limit: int | None = None) -> Study:
    """Validate a parsed study mapping against the benchmark's plugins; a study that expands
    to more than ``trial_limit`` trials (else its own ``trial_limit``, else
    :data:`DEFAULT_TRIAL_LIMIT`) is refused, counted before any trial is built."""
    check = _Checker(path)
    check.mapping(raw, "", required=True)
    unknown = sorted(set(raw) - set(TOP_LEVEL_KEYS), key=str)
    if unknown:
        key = str(unknown[0]) or repr(unknown[0])  # an empty key is still named
        check.fail(key, f"unknown key; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    name = raw.get("name")
    if not (isinstance(name, str) and NAME_PATTERN.match(name)):
        check.fail("name", "required; letters, digits, '_' and '-' only")
    raw_datasets, dataset_objectives = check.dataset_objectives(raw.get("datasets"))
    datasets = check.named_grids(raw_datasets, "datasets", "datasets", registry.dataset_class)
    dataset_objectives = {
        name: check.objective_variants(variants, f"datasets.{name}.objective")
        for name, variants in dataset_objectives.items()
    }
    objective = check.grid(raw.get("objective") or {}, "objective", registry.objective_class())
    solvers = check.solvers(raw.get("solvers"))
    search = raw.get("search") or {}
    check.mapping(search, "search")
    search = check.settings(Search, search, "search")
    seeds = check.settings(Seeds, {"seeds": raw.get("seeds", [0])}).seeds
    measures = check.measures(raw.get("measures", []))
    measure_config = check.measure_config(raw.get("measure_config") or {})
    score_config = check.score_config(raw.get("score_config") or {})
    analyses = check.names(raw.get("analyses", []), "analyses", "analysis")
    given = {key: raw[key] for key in RunSettings.KEYS if key in raw}
    for key in ("resources", "accel"):  # an empty section is the defaults
        given[key] = raw.get(key) or {}
    run = check.settings(RunSettings, {"keep": artifacts.default_keep(measures), **given})
    study = Study(
        path=path,
        name=name,
        description=str(raw.get("description", "")),
        datasets=datasets,
        objective=objective,
        solvers=solvers,
        search_kind=search.kind,
        trials_per_solver=search.trials_per_solver,
        search_seed=search.seed,
        hparams_draw=search.hparams,
        seeds=seeds,
        measures=measures,
        analyses=analyses,
        run=run,
        measure_config=measure_config,
        score_config=score_config,
        dataset_objectives=dataset_objectives,
    )
    check.limit(study, run.trial_limit if trial_limit is None else trial_limit)
    check.values(study)
    return study


class _Checker:
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

    def measure_config(self, value: Any) -> dict[str, Any]:
        """``{field: value}`` of :class:`shiftbench.measures.core.MeasureConfig`."""
        from shiftbench.measures.core import MeasureConfig

        return self.config(value, "measure_config", MeasureConfig)

    def score_config(self, value: Any) -> dict[str, Any]:
        """``{field: value}`` of :class:`shiftbench.stats.ScoreConfig`."""
        from shiftbench.studies.generalization_measures.stats import ScoreConfig

        return self.config(value, "score_config", ScoreConfig)

    def config(self, value: Any, name: str, cls: type) -> dict[str, Any]:
        """``{field: value}`` of the frozen dataclass ``cls``, checked by building it
        (unknown field, wrong type or impossible value fail here)."""
        from dataclasses import fields

        self.mapping(value, name)
        allowed = {f.name: f.default for f in fields(cls)}
        for key, v in value.items():
            if key not in allowed:
                self.fail(f"{name}.{key}", f"unknown key; allowed: {', '.join(allowed)}")
            self.same_type(v, allowed[key], f"{name}.{key}")
        try:
            cls(**value)
        except ValueError as exc:
            self.fail(name, str(exc))
        return dict(value)

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
            for params in grid_samples(_as_spaces(grid)):
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
