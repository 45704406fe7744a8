"""Study files: parse and validate ``benchmarks/<study>.yml``, then expand it into trials.

Every problem is found before any trial runs and reported as one line that
names the file, the key and what is allowed (:class:`StudyError`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from shiftbench.data import seeds as data_seeds
from shiftbench.measures.config import MeasureConfig
from shiftbench.plugins import registry
from shiftbench.spec.checks import Checker, StudyError, as_spaces
from shiftbench.spec.search import (
    Choice,
    Fixed,
    grid_samples,
    parse_space,
    random_samples,
)
from shiftbench.spec.settings import (
    Resources,
    RunSettings,
    Search,
    Seeds,
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
    "compile (false|true|backend), flush_denormal (auto|true|false), "
    "retain_memory (auto|true|false)",
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
    # the settings of the measures computed at the end of each trial
    measure_config: MeasureConfig = field(default_factory=MeasureConfig)
    # the measures analyses' statistics settings (shiftbench.stats.ScoreConfig fields), which
    # the analyses declare and build (the engine checks them, and carries them as given)
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
            for values in grid_samples(as_spaces(grid))
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
            for dataset_params in grid_samples(as_spaces(dataset_grid)):
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
    check = Checker(path)
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
    analyses = check.names(raw.get("analyses", []), "analyses", "analysis")
    score_config = check.analysis_section("score_config", raw.get("score_config"), analyses)
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
