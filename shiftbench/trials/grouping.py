"""Which trials vectorize together: the ensemble key a trial must share with others
(:func:`ensemble_key`, from the plugins' declared capabilities), the partition of trials into
groups of at most K (:func:`ensemble_groups`) and the sweep's units of work
(:func:`plan_groups`). The vectorized trainer that runs a group is
:mod:`shiftbench.trials.ensemble`.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from shiftbench.models.registry import vectorized_on_cpu
from shiftbench.plugins import registry
from shiftbench.trials.trial import Trial

ENSEMBLE_HPARAMS = frozenset({"lr", "weight_decay", "momentum", "beta1", "beta2", "eps", "alpha"})


def ensemble_key(trial: Trial) -> Hashable | None:
    """What a trial must share with others to be vectorized with them, or None if it cannot
    be vectorized, as the plugins declare it: the objective's ``ensemble_model`` hook names
    no vectorizable model, a solver hyperparameter is off its ``vectorized_at`` value, or
    the optimizer has no vectorized update rule."""
    if ensemble_model(trial) is None:
        return None
    solver_params = dict(trial.solver_params)
    solver_cls = registry.solver_class(trial.solver)
    at = getattr(solver_cls, "vectorized_at", {})
    if any(solver_params.get(key, value) != value for key, value in at.items()):
        return None
    from shiftbench.trials.ensemble import RULES  # the trainer needs torch.func; load late

    rule = RULES.get(getattr(solver_cls, "optimizer_class", None))
    if rule is None or not set(solver_cls.get_instance(**solver_params).optimizer_kwargs()) <= (
        rule.kwargs
    ):
        return None
    fixed = tuple((k, v) for k, v in trial.solver_params if k not in ENSEMBLE_HPARAMS)
    return trial.dataset, trial.dataset_params, trial.objective_params, trial.solver, fixed


def ensemble_model(trial: Trial) -> str | None:
    """The model family of ``trial`` if its objective parameters allow a vectorized ensemble
    (the objective's ``ensemble_model`` hook; an objective without it allows none)."""
    hook = getattr(registry.objective_class(), "ensemble_model", None)
    return hook(dict(trial.objective_params)) if hook else None


def can_ensemble(trials: Sequence[Trial]) -> bool:
    """Whether these trials can be trained as one vectorized ensemble."""
    keys = {ensemble_key(t) for t in trials}
    return len(keys) == 1 and None not in keys


def ensemble_groups(trials: Sequence[Trial], max_k: int) -> list[list[Trial]]:
    """Partition ``trials`` into ensembles of at most ``max_k`` members, in order of first
    appearance; a trial that cannot be vectorized is a group of one."""
    if max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    groups: dict[Hashable, list[list[Trial]]] = {}
    out: list[list[Trial]] = []
    for trial in trials:
        key = ensemble_key(trial)
        chunks = groups.setdefault(key, []) if key is not None else None
        if chunks and len(chunks[-1]) < max_k:
            chunks[-1].append(trial)
            continue
        group = [trial]
        out.append(group)
        if chunks is not None:
            chunks.append(group)
    return out


AUTO_MAX_K_GPU = 32
AUTO_MAX_K_CPU = 16


def plan_groups(
    trials: Sequence[Trial],
    ensemble: str | int,
    *,
    uses_gpu: bool,
    measures: bool,
    parallel: int = 1,
) -> list[list[Trial]]:
    """The sweep's units of work: vectorized groups where they apply, else single trials.

    ``ensemble`` is the study's key: ``off``; an integer, the largest group; or ``auto``:
    groups of up to 32 on GPU workers, and on CPU workers groups of up to 16 of the model
    families registered ``vectorize_on_cpu`` (the MLP: a vectorized convolution is a grouped
    convolution, slower on CPU than K separate ones: ``perf/ensemble.py``). Trials whose
    measures are asked for always run alone. Groups are kept small enough that there are at
    least ``parallel`` of them, so no worker idles.
    """
    if ensemble == "off" or measures:
        return [[trial] for trial in trials]
    if ensemble != "auto":
        candidates, max_k = list(trials), int(ensemble)
    elif uses_gpu:
        candidates, max_k = list(trials), AUTO_MAX_K_GPU
    else:
        candidates = [t for t in trials if vectorized_on_cpu(ensemble_model(t))]
        max_k = AUTO_MAX_K_CPU
    max_k = max(1, min(max_k, -(-len(candidates) // max(parallel, 1))))
    chosen = {t.trial_id for t in candidates}
    return ensemble_groups(candidates, max_k) + [[t] for t in trials if t.trial_id not in chosen]
