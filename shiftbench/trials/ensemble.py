"""Vectorized ensembles: K trials of one architecture trained together with ``torch.func``.

Trials that share a data set, objective parameters, solver, batch size and model, and
differ only in continuous optimizer hyperparameters (lr, weight decay, momentum, betas,
eps, alpha) and seed, are stacked along a leading member axis: one ``vmap(grad(loss))``
call gives every member's gradient, and the update rules of ``torch.optim`` are applied
with per-member hyperparameter tensors. Each member reproduces its sequential run: its
initial weights come from ``objective.build_model()`` under its seed, and its minibatches
are the draws of its own :class:`~shiftbench.training.primitives.EnvSampler` generator.

Restrictions (checked by ``grouping.ensemble_key``): ERM only (IRM's penalty differentiates
inside the loss and resets the optimizer), no rotated basis, and models without dropout
or BatchNorm. ``vmap(randomness="different")`` draws dropout masks from one shared stream,
so a member's masks would differ from its sequential run; BatchNorm's running statistics
are buffers updated in place. Hence ``mlp``/``cnn`` with ``dropout == 0`` and
``mnist_cnn`` (GroupNorm has no running statistics).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from shiftbench import faults
from shiftbench.store import checkpoint, schema
from shiftbench.training.algorithms import ERM
from shiftbench.training.primitives import EnvSampler
from shiftbench.trials.accel import PLAIN
from shiftbench.trials.grouping import can_ensemble
from shiftbench.trials.runner import TrialOutcome, TrialRunner
from shiftbench.trials.trial import Trial
from shiftbench.trials.unit import WorkUnit

Params = dict[str, torch.Tensor]
State = dict[str, dict[str, torch.Tensor]]
Curve = list[dict[str, Any]]
Flags = dict[str, bool]


@dataclass(frozen=True)
class UpdateRule:
    """One ``torch.optim`` class, vectorized: ``step(p, g, state, hp, flags)`` updates the
    stacked parameter ``p`` (member axis first) in place; ``hp`` holds per-member values
    broadcastable to ``p``, ``flags`` the boolean keyword arguments all members share."""

    kwargs: frozenset[str]
    step: Callable[[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], Params, Flags], None]


def _sgd(
    p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], hp: Params, flags: Flags
) -> None:
    """``torch.optim.SGD`` (dampening 0): coupled L2, heavy-ball or Nesterov momentum."""
    g = g + hp["weight_decay"] * p
    if "momentum" in hp:
        mu = hp["momentum"]
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = g.clone()
        else:
            buf.mul_(mu).add_(g)
        g = g + mu * buf if flags.get("nesterov", False) else buf
    p.sub_(hp["lr"] * g)


def _adam(
    p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], hp: Params, flags: Flags
) -> None:
    """``torch.optim.Adam`` (coupled L2), without amsgrad."""
    _adam_moments(p, g + hp["weight_decay"] * p, state, hp)


def _adamw(
    p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], hp: Params, flags: Flags
) -> None:
    """``torch.optim.AdamW``: decoupled weight decay, then Adam's step, without amsgrad."""
    p.mul_(hp["decay_factor"])
    _adam_moments(p, g, state, hp)


def _adam_moments(
    p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], hp: Params
) -> None:
    """Adam's moment updates and bias-corrected step (``_single_tensor_adam``)."""
    if not state:
        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
    m, v = state["exp_avg"], state["exp_avg_sq"]
    m.lerp_(g, hp["one_minus_beta1"])
    v.mul_(hp["beta2"]).add_(hp["one_minus_beta2"] * g * g)
    denom = v.sqrt().div_(hp["bias_correction2_sqrt"]).add_(hp["eps"])
    p.sub_(hp["step_size"] * (m / denom))


def _rmsprop(
    p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], hp: Params, flags: Flags
) -> None:
    """``torch.optim.RMSprop`` (not centered, no momentum), coupled L2."""
    g = g + hp["weight_decay"] * p
    if not state:
        state["square_avg"] = torch.zeros_like(p)
    square_avg = state["square_avg"]
    square_avg.mul_(hp["alpha"]).add_(hp["one_minus_alpha"] * g * g)
    p.sub_(hp["lr"] * (g / square_avg.sqrt().add_(hp["eps"])))


RULES: dict[type[torch.optim.Optimizer], UpdateRule] = {
    torch.optim.SGD: UpdateRule(frozenset({"lr", "weight_decay", "momentum", "nesterov"}), _sgd),
    torch.optim.Adam: UpdateRule(frozenset({"lr", "weight_decay", "betas", "eps"}), _adam),
    torch.optim.AdamW: UpdateRule(frozenset({"lr", "weight_decay", "betas", "eps"}), _adamw),
    torch.optim.RMSprop: UpdateRule(frozenset({"lr", "weight_decay", "alpha", "eps"}), _rmsprop),
}


def _member_hparams(
    solvers: Sequence[Any],
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], Flags]:
    """Each numeric optimizer keyword argument as a float64 tensor of shape (K,) (``betas``
    split in two), and the boolean ones, which must agree between members."""
    columns: dict[str, list[float]] = {}
    flags: dict[str, set[bool]] = {}
    for solver in solvers:
        kwargs = dict(solver.optimizer_kwargs())
        if "betas" in kwargs:
            kwargs["beta1"], kwargs["beta2"] = kwargs.pop("betas")
        for key, value in kwargs.items():
            if isinstance(value, bool):
                flags.setdefault(key, set()).add(value)
            else:
                columns.setdefault(key, []).append(float(value))
    disagree = sorted(key for key, values in flags.items() if len(values) > 1)
    if disagree:
        raise ValueError(f"members disagree on {', '.join(disagree)}")
    tensors = {k: torch.tensor(v, dtype=torch.float64, device=device) for k, v in columns.items()}
    return tensors, {k: v.pop() for k, v in flags.items()}


def _step_hparams(hp: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    """Per-step derived values, computed in float64 as torch.optim does in Python floats."""
    out = dict(hp)
    if "beta1" in hp:
        out["one_minus_beta1"] = 1 - hp["beta1"]
        out["one_minus_beta2"] = 1 - hp["beta2"]
        out["step_size"] = hp["lr"] / (1 - hp["beta1"] ** t)
        out["bias_correction2_sqrt"] = (1 - hp["beta2"] ** t) ** 0.5
        out["decay_factor"] = 1 - hp["lr"] * hp["weight_decay"]
    if "alpha" in hp:
        out["one_minus_alpha"] = 1 - hp["alpha"]
    return out


def _broadcast(hp: dict[str, torch.Tensor], p: torch.Tensor) -> Params:
    """Per-member values viewed as (K, 1, ..., 1) to broadcast against ``p``."""
    shape = (-1,) + (1,) * (p.dim() - 1)
    return {k: v.view(shape) for k, v in hp.items()}


class _Member(nn.Module):
    """Member ``k`` as a module that reads the live stacked parameters (for evaluation)."""

    def __init__(self, base: nn.Module, params: Params, k: int) -> None:
        super().__init__()
        self.base, self.k = base, k
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.base, {n: p[self.k] for n, p in self.params.items()}, (x,))


class VectorizedTrainer:
    """K solvers of one class on one objective, trained as a single vectorized model."""

    def __init__(self, objective: Any, solvers: Sequence[Any], seeds: Sequence[int]) -> None:
        if not solvers or len(solvers) != len(seeds):
            raise ValueError(f"need one seed per solver, got {len(solvers)} and {len(seeds)}")
        kinds = {type(s) for s in solvers}
        batch_sizes = {int(s.batch_size) for s in solvers}
        if len(kinds) != 1 or len(batch_sizes) != 1:
            raise ValueError("an ensemble needs one solver class and one batch_size")
        for solver in solvers:
            solver.validate()
            for key, value in solver.vectorized_at.items():
                if getattr(solver, key) != value:
                    raise ValueError(f"{key}={getattr(solver, key)!r} is not vectorized")
        task = objective.get_objective()
        if not isinstance(task["algorithm"], ERM):
            raise ValueError(f"only ERM is vectorized, not {objective.algorithm!r}")
        solver_cls = kinds.pop()
        rule = RULES.get(solver_cls.optimizer_class)
        kwargs = set(solvers[0].optimizer_kwargs())
        if rule is None or not kwargs <= rule.kwargs:
            raise ValueError(
                f"{solver_cls.optimizer_class.__name__} with {sorted(kwargs)} "
                "has no vectorized update rule"
            )
        if not all(isinstance(env.x, torch.Tensor) for env in objective.train_envs):
            raise ValueError("lazy (augmented) image inputs are not vectorized")
        self.objective, self.rule, self.algorithm = objective, rule, task["algorithm"]
        self.steps, self.eval_every = int(objective.steps), int(objective.eval_every)
        self.device = objective.torch_device
        models = self._init_models(seeds)
        params, buffers = stack_module_state(models)
        if buffers or any(isinstance(m, nn.Dropout) and m.p > 0 for m in models[0].modules()):
            raise ValueError(f"model {objective.model!r} has buffers or dropout; not vectorized")
        self.params: Params = {n: p.detach() for n, p in params.items()}
        self.init_params: Params = {n: p.clone() for n, p in self.params.items()}
        self.base = copy.deepcopy(models[0]).to("meta")
        batch_size = batch_sizes.pop()
        self.samplers = [EnvSampler(objective.train_envs, batch_size, s) for s in seeds]
        self.hparams, self.flags = _member_hparams(solvers, self.device)
        self.state: State = {n: {} for n in self.params}
        self.resumed_from = 0  # the step ``run`` continued from (0: from the start)
        self._grad = vmap(grad(self._loss))

    def _init_models(self, seeds: Sequence[int]) -> list[nn.Module]:
        """``objective.build_model()`` under each member's seed (as each sequential run)."""
        original = self.objective.seed
        try:
            models = []
            for seed in seeds:
                self.objective.seed = seed
                models.append(self.objective.build_model())
            return models
        finally:
            self.objective.seed = original

    def _loss(
        self,
        params: Params,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        def model(x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, params, (x,))

        return self.algorithm.loss(model, batches, 0)

    def _batches(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every member's next minibatch, stacked: ``EnvSampler``'s draws, one gather per env."""
        per_env = [[] for _ in self.objective.train_envs]
        for sampler in self.samplers:
            for env, draws in zip(sampler.envs, per_env):
                draws.append(sampler.draw(env))
        batches = []
        for env, draws in zip(self.objective.train_envs, per_env):
            idx = torch.stack(draws)
            x, y = env.take(idx.flatten())
            batches.append((x.view(*idx.shape, *x.shape[1:]), y.view(idx.shape)))
        return batches

    def step(self, t: int) -> None:
        """Optimizer step ``t`` (1-based, as torch.optim's state ``step``) for every member."""
        grads = self._grad(self.params, self._batches())
        dtype = next(iter(self.params.values())).dtype
        hp = {k: v.to(dtype) for k, v in _step_hparams(self.hparams, t).items()}
        with torch.no_grad():
            for name, p in self.params.items():
                self.rule.step(p, grads[name], self.state[name], _broadcast(hp, p), self.flags)

    def member_model(self, k: int, initial: bool = False) -> nn.Module:
        """Member ``k`` as a standalone module (its trained or initial weights)."""
        source = self.init_params if initial else self.params
        model = copy.deepcopy(self.base).to_empty(device=self.device)
        model.load_state_dict({n: p[k] for n, p in source.items()})
        return model

    def training_state(self) -> dict[str, Any]:
        """What a resumed run needs: the stacked weights, the update rule's stacked state
        (moments, momentum buffers) and each member's sampler generator."""
        return {
            "params": self.params,
            "state": self.state,
            "samplers": [sampler.generator.get_state() for sampler in self.samplers],
        }

    @torch.no_grad()
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``training_state()`` (weights copied in place: members share them)."""
        for name, p in self.params.items():
            p.copy_(state["params"][name])
        self.state = {
            name: {key: value.to(self.device) for key, value in rule_state.items()}
            for name, rule_state in state["state"].items()
        }
        for sampler, generator in zip(self.samplers, state["samplers"], strict=True):
            sampler.generator.set_state(generator)

    def run(self, resume: checkpoint.Checkpoints | None = None) -> list[Curve]:
        """Train for the objective's steps; evaluate every ``eval_every`` steps and at the end.

        Returns one curve per member, as :class:`~shiftbench.trials.runner.Checkpointer` builds it.
        ``time`` is the ensemble's training time (evaluations excluded) divided by K: each
        member's share. A member whose train loss is not finite, or at or below the objective's
        ``target_loss`` when that is > 0, stops there (its curve ends, as a sequential run's).
        With ``resume`` the run saves its state when due and continues from a saved one
        (``resumed_from`` is then its step).
        """
        k = len(self.samplers)
        curves: list[Curve] = [[] for _ in range(k)]
        active = list(range(k))
        target = float(getattr(self.objective, "target_loss", 0.0))
        members = [_Member(self.base, self.params, i) for i in range(k)]
        elapsed = 0.0
        saved = resume.load() if resume else None
        self.resumed_from = saved[0] if saved else 0
        if saved:
            self.restore(saved[1]["trainer"])
            curves, active, elapsed = saved[1]["curves"], saved[1]["active"], saved[1]["elapsed"]
            checkpoint.set_rng_state(saved[1]["rng"])
        for step in range(self.resumed_from, self.steps + 1):
            restored = saved is not None and step == self.resumed_from  # evaluated and saved
            if (step % self.eval_every == 0 or step == self.steps) and not restored:
                for i in list(active):
                    metrics = self.objective.evaluate_result(members[i])
                    metrics.pop("value", None)
                    curves[i].append(schema.checkpoint(step, elapsed / k, metrics))
                    loss = metrics["train_loss"]
                    if not math.isfinite(loss) or (target > 0 and loss <= target):
                        active.remove(i)
            if step == self.steps or not active:
                break
            if resume and resume.due(step, self.steps) and not restored:
                state = {
                    "trainer": self.training_state(),
                    "curves": curves,
                    "active": active,
                    "elapsed": elapsed,
                    "rng": checkpoint.rng_state(),
                }
                resume.save(state, step)
            started = time.perf_counter()
            self.step(step + 1)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            elapsed += time.perf_counter() - started
        return curves


def ensemble_trainer(runner: TrialRunner, trials: Sequence[Trial]) -> VectorizedTrainer:
    """The trainer of a group from ``grouping.ensemble_groups``, on ``runner``'s device, with the
    data from ``runner``'s cache (objective and solvers built as ``runner.run`` builds them)."""
    if not can_ensemble(trials):
        raise ValueError("these trials cannot be vectorized together")
    solvers = [runner.solver(t) for t in trials]
    return VectorizedTrainer(runner.objective(trials[0]), solvers, [t.seed for t in trials])


def run_ensemble(
    runner: TrialRunner, trials: Sequence[Trial], study: str, attempts: Sequence[int]
) -> list[TrialOutcome]:
    """Run a group from ``grouping.ensemble_groups`` and return each trial's outcome, as
    ``runner.run`` would; if the vectorized run fails, every trial falls back to
    ``runner.run`` (so a bad member fails alone, with its own error)."""
    started = datetime.now(UTC)
    try:
        for trial in trials:
            faults.hit("trial.start", trial.trial_id)
        trainer = ensemble_trainer(runner, trials)
        resume = runner.checkpoints(study, [t.trial_id for t in trials])
        with runner.accel.cpu_modes():
            curves = trainer.run(resume)
    except Exception as exc:
        warnings.warn(
            f"vectorized run failed ({exc}); running {len(trials)} trials one by one",
            RuntimeWarning,
            stacklevel=2,
        )
        return [runner.run(t, study, a) for t, a in zip(trials, attempts)]
    train_envs = trainer.objective.train_envs
    examples = sum(len(env) for env in train_envs)
    per_step = trainer.samplers[0].batch_size * len(train_envs)
    # the vectorized step is plain fp32, in the runner's CPU modes
    cpu = {k: getattr(runner.accel, k) for k in ("flush_denormal", "retain_memory")}
    provenance = runner.row_provenance(replace(PLAIN, **cpu))
    outcomes = []
    for trial, attempt, curve in zip(trials, attempts, curves):
        for point in curve:
            point["epoch"] = point["step"] * per_step / examples
        status = schema.DONE if math.isfinite(curve[-1]["train_loss"]) else schema.DIVERGED
        extra = {"resumed_from_step": trainer.resumed_from} if resume else {}
        rows = schema.trial_rows(
            trial, study, attempt, status, "", curve, extra, started, provenance
        )
        outcomes.append(TrialOutcome(trial.trial_id, status, rows))
    return outcomes


def run_group(runner: TrialRunner, unit: WorkUnit) -> list[TrialOutcome]:
    """Run one unit of work (a group from ``grouping.plan_groups``): a single trial, or an
    ensemble."""
    if len(unit.trials) == 1:
        trial, attempt = unit.trials[0], unit.attempts[0]
        return [runner.run(trial, unit.study, attempt, unit.measures, unit.measure_config)]
    return run_ensemble(runner, unit.trials, unit.study, unit.attempts)
