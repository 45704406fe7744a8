"""The base of every optimizer plugin: a Benchopt solver that trains the objective's model.

A plugin names its ``torch.optim`` class, maps its hyperparameters to the
optimizer's keyword arguments, and declares its ``search_space``; the loop,
the checkpoint callback, IRM's optimizer reset and rotated bases live here
once. Sampling is Benchopt's ``callback`` strategy: one run, evaluated at
checkpoints, never restarted from scratch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from benchopt import BaseSolver

from shiftbench.spec.search import IntUniform, LogOneMinus, LogUniform, Space
from shiftbench.training.parameter_views import LAYER_TYPES
from shiftbench.training.primitives import LR_SCHEDULES, EnvSampler, lr_factor
from shiftbench.training.rotations import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_SVD_EVERY,
    SCOPES,
    RotatedOptimizer,
)
from shiftbench.trials.accel import PLAIN, Accel

COMMON_PARAMETERS: dict[str, list[Any]] = {
    "lr": [0.01],
    "weight_decay": [0.0],
    "batch_size": [64],
    "rotation": ["none"],
    "rotation_block_size": [DEFAULT_BLOCK_SIZE],
    "svd_every": [DEFAULT_SVD_EVERY],
    "rotation_layers": ["all"],
    "lr_schedule": ["constant"],
    "warmup_steps": [0],
    "min_lr_ratio": [0.1],
    "max_grad_norm": [0.0],
}
# When a hyperparameter added after the first studies ran has no effect: a trial's config then
# leaves it out (``trial_params``), so the trials that ran before it existed keep their ids.
INERT: dict[str, Callable[[dict[str, Any]], bool]] = {
    "rotation_block_size": lambda p: p["rotation"] in ("none", "svd"),
    "svd_every": lambda p: p["rotation"] != "svd",
    "rotation_layers": lambda p: p["rotation"] == "none" or p["rotation_layers"] == "all",
    "lr_schedule": lambda p: p["lr_schedule"] == "constant",
    "warmup_steps": lambda p: p["warmup_steps"] == 0,
    "min_lr_ratio": lambda p: p["lr_schedule"] == "constant",
    "max_grad_norm": lambda p: p["max_grad_norm"] == 0,
}
# The values a vectorized ensemble trains at: a rotation, a learning-rate schedule or gradient
# clipping change the loop beyond one optimizer step, which the ensemble does not vectorize.
VECTORIZED_AT: dict[str, Any] = {
    "rotation": "none",
    "lr_schedule": "constant",
    "warmup_steps": 0,
    "max_grad_norm": 0.0,
}
COMMON_SPACE: dict[str, Space] = {
    "weight_decay": LogUniform(1e-6, 1e-2),
    "batch_size": IntUniform(16, 128),
}


class TorchSolver(BaseSolver):
    """Train with ``optimizer_class(**optimizer_kwargs())`` for the objective's step budget."""

    sampling_strategy = "callback"
    optimizer_class: ClassVar[type[torch.optim.Optimizer]]
    parameters: ClassVar[dict[str, list[Any]]] = COMMON_PARAMETERS
    search_space: ClassVar[dict[str, Space]] = COMMON_SPACE
    requirements: ClassVar[list[str]] = []
    # How the loop runs (bf16, channels-last, compile): the shiftbench runner sets the
    # study's settings resolved for its device; ``benchopt run`` keeps the plain fp32 loop.
    accel: Accel = PLAIN
    vectorized_at: ClassVar[dict[str, Any]] = VECTORIZED_AT
    # The step ``run`` starts at: 0, or a checkpoint's step after ``restore``.
    start_step: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every solver has the parameters the training loop reads (``COMMON_PARAMETERS``:
        lr, weight_decay, batch_size, rotation), with the subclass's defaults on top, so a
        solver that declares only its own (``{"lr": [0.01], "lr_decay": [0.0]}``) works."""
        super().__init_subclass__(**kwargs)
        cls.parameters = {**COMMON_PARAMETERS, **cls.parameters}

    @classmethod
    def trial_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` (every hyperparameter) without those that have no effect (``INERT``)."""
        return {k: v for k, v in params.items() if not (k in INERT and INERT[k](params))}

    @classmethod
    def check_parameters(cls, params: dict[str, Any]) -> None:
        """The validation hook the objective and datasets share: :meth:`validate` on an
        instance with ``params``."""
        cls.get_instance(**params).validate()

    def optimizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``optimizer_class`` from this solver's hyperparameters."""
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def validate(self) -> None:
        """Reject impossible values before any training (negative lr, empty batch, ...)."""
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.rotation not in SCOPES:
            raise ValueError(f"rotation must be one of {', '.join(SCOPES)}, got {self.rotation!r}")
        if int(self.rotation_block_size) < 1 or int(self.svd_every) < 1:
            raise ValueError(
                f"rotation_block_size and svd_every must be >= 1, got "
                f"{self.rotation_block_size}, {self.svd_every}"
            )
        unknown = set(self.layer_types()) - set(LAYER_TYPES)
        if unknown:
            raise ValueError(
                f"rotation_layers must be 'all' or layer types joined by '+' "
                f"({', '.join(LAYER_TYPES)}), got {self.rotation_layers!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if int(self.warmup_steps) < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"need warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got "
                f"{self.warmup_steps}, {self.min_lr_ratio}"
            )
        if not 0 <= self.max_grad_norm < float("inf"):
            raise ValueError(f"max_grad_norm must be >= 0 and finite, got {self.max_grad_norm}")

    def layer_types(self) -> tuple[str, ...]:
        """The layer types ``rotation_layers`` rotates (``attn+mlp``); empty for ``all``."""
        return () if self.rotation_layers == "all" else tuple(self.rotation_layers.split("+"))

    def build_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer, in a rotated basis when ``rotation`` is not ``none`` (weight decay is
        then decoupled and applied in the standard basis, as in Zhang, Maes et al. 2025)."""
        kwargs = self.optimizer_kwargs()
        if self.rotation == "none":
            return self.optimizer_class(params, **kwargs)
        return RotatedOptimizer(
            params,
            self.optimizer_class,
            scope=self.rotation,
            block_size=int(self.rotation_block_size),
            seed=self.seed,
            svd_every=int(self.svd_every),
            module=self.model,
            layer_types=self.layer_types(),
            **kwargs,
        )

    def set_objective(self, model, train_envs, algorithm, steps, seed, reset_to) -> None:
        self.validate()
        self.model, self.algorithm, self.steps, self.seed = model, algorithm, steps, seed
        self.reset_to = reset_to
        self.sampler = EnvSampler(train_envs, int(self.batch_size), seed)
        self.device = train_envs[0].y.device
        self.train_model = self.accel.prepare(model)
        self.optimizer = self.build_optimizer(model.parameters())

    def reset_optimizer(self) -> torch.optim.Optimizer:
        """IRM's reset at the penalty switch (``reset_to``): ``adam`` is DomainBed's
        (``algorithms.IRM.update``: ``torch.optim.Adam(lr, weight_decay)``), ``same`` a fresh
        optimizer of the run's own kind (an extension)."""
        if self.reset_to == "adam":
            return torch.optim.Adam(
                self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay
            )
        return self.build_optimizer(self.model.parameters())

    def training_state(self) -> dict[str, Any]:
        """What a resumed run needs of this solver: model, optimizer (and so the learning
        rate; a rotated one with its rotation state) and the data sampler's generator."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.generator.get_state(),
        }

    def restore(self, state: dict[str, Any], step: int) -> None:
        """Continue from ``training_state()`` taken after ``step`` steps (past IRM's penalty
        switch, the optimizer is the reset one)."""
        self.model.load_state_dict(state["model"])
        reset_at = self.algorithm.reset_at
        if reset_at is not None and step > reset_at:
            self.optimizer = self.reset_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.generator.set_state(state["sampler"])
        self.start_step = step

    def run(self, callback: Callable[[], bool]) -> None:
        """Train until the callback says stop: no host synchronisation between its calls
        (data, sampling and optimizer state all live on the device). The learning rate
        follows ``lr_schedule`` after ``warmup_steps`` (``primitives.lr_factor``);
        with ``max_grad_norm`` > 0 the gradient is clipped to that global norm first."""
        self.model.train()
        step = self.start_step
        scheduled = self.lr_schedule != "constant" or int(self.warmup_steps) > 0
        while callback():
            if step == self.steps:
                break
            if step == self.algorithm.reset_at:
                self.optimizer = self.reset_optimizer()
            if scheduled:
                factor = lr_factor(
                    step, self.steps, int(self.warmup_steps), self.lr_schedule, self.min_lr_ratio
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr * factor
            with self.accel.autocast(self.device):
                loss = self.algorithm.loss(self.train_model, next(self.sampler), step)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            step += 1

    def get_result(self) -> dict:
        return {"model": self.model}


def solver_space(solver_cls: type[TorchSolver]) -> dict[str, Space]:
    """A solver's declared search space (hyperparameters absent from it stay at default)."""
    return dict(solver_cls.search_space)


class MomentumSolver(TorchSolver):
    """SGD with momentum ``mu`` (searched as log10(1 - mu)); Nesterov's variant by flag."""

    optimizer_class = torch.optim.SGD
    nesterov: ClassVar[bool] = False
    parameters: ClassVar[dict[str, list[Any]]] = {
        **COMMON_PARAMETERS,
        "lr": [0.05],
        "momentum": [0.9],
    }
    search_space: ClassVar[dict[str, Space]] = {
        **COMMON_SPACE,
        "lr": LogUniform(1e-3, 1.0),
        "momentum": LogOneMinus(-3, -0.5),
    }

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def optimizer_kwargs(self) -> dict[str, Any]:
        return {**super().optimizer_kwargs(), "momentum": self.momentum, "nesterov": self.nesterov}


class AdamSolver(TorchSolver):
    """Adam-family solvers: 1 - beta1 and 1 - beta2 searched on a log scale, and epsilon."""

    parameters: ClassVar[dict[str, list[Any]]] = {
        **COMMON_PARAMETERS,
        "lr": [1e-3],
        "beta1": [0.9],
        "beta2": [0.999],
        "eps": [1e-8],
    }
    search_space: ClassVar[dict[str, Space]] = {
        **COMMON_SPACE,
        "lr": LogUniform(1e-5, 1e-1),
        "beta1": LogOneMinus(-3, -0.5),
        "beta2": LogOneMinus(-5, -1),
        "eps": LogUniform(1e-10, 1e-3),
    }

    def validate(self) -> None:
        super().validate()
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0 and self.eps >= 0):
            raise ValueError(
                f"need 0 <= beta1, beta2 < 1 and eps >= 0, got "
                f"{self.beta1}, {self.beta2}, {self.eps}"
            )

    def optimizer_kwargs(self) -> dict[str, Any]:
        return {**super().optimizer_kwargs(), "betas": (self.beta1, self.beta2), "eps": self.eps}
