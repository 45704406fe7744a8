"""Generalization measures: the registry, the shared measurement context and ``compute``.

A measure is a function ``f(ctx: MeasureContext) -> float`` registered by name with
``@measure(name, family=..., adjustment=...)`` in a plugin file under ``measures/``
(loaded by path with :func:`shiftbench.plugins.files.load_all`). ``compute`` evaluates the
requested measures on one trained model; a measure that fails or is undefined for that
model gives NaN and its reason (see ``compute_with_reasons``).

The size adjustment follows Jiang et al. (ICLR 2020, "Fantastic Generalization Measures and
Where to Find Them", Sec. 6 / App. C): a measure named ``log_*`` becomes
``0.5 * (value - log m)``, any other complexity measure ``sqrt(value / m)``, with ``m`` the
number of training examples; empirical quantities (calibration, optimization speed,
information criteria) are registered with ``adjustment="none"``.

One parameter set serves every measure that counts or sums parameters (``params``, AIC,
BIC, the PAC-Bayes and sharpness bounds): the weights of the BatchNorm-folded model's
Linear and Conv2d layers, biases excluded (:attr:`MeasureContext.flat_weights`, ``omega``
their number), as in the reference implementation (nitarshan/robust-generalization-measures,
``data/generation/measures.py``, ``get_all_measures``: ``get_weights_only`` drops every
parameter named ``bias`` or ``bn`` after ``_reparam`` folds the BatchNorms, lines 120-133,
and ``w_vec``, ``dist_w_vec`` and ``num_params = len(w_vec)`` feed ``PARAMS``, line 147,
``_pacbayes_bound``, lines 239-242, and ``_pacbayes_mag_bound``, lines 248-254). The
perturbation searches perturb every parameter, biases too, as the reference's
``_perturbed_model`` does (lines 46-52).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shiftbench.measures import utils as mu
from shiftbench.measures.config import MeasureConfig
from shiftbench.measures.utils import Undefined

Adjustment = Literal["log", "sqrt", "none"]
MeasureFn = Callable[["MeasureContext"], float]
__all__ = [
    "MeasureConfig",
    "MeasureContext",
    "Undefined",
    "available",
    "compute",
    "compute_with_reasons",
    "families",
    "measure",
    "size_adjusted",
]


@dataclass(frozen=True)
class Measure:
    """One registered measure: its function, family, size adjustment and direction.

    ``direction`` is +1 when a larger value predicts a larger generalization gap (every
    complexity measure and bound), -1 when a larger value predicts a smaller one (e.g. the
    mean confidence): a measure selects the model with the lowest ``direction * value``.
    """

    name: str
    fn: MeasureFn
    family: str
    adjustment: Adjustment
    direction: int = 1
    # a probe of the training run (its optimizer state, minibatch Hessians), not a measure of
    # the trained model: named one by one, never part of ``measures: all``
    probe: bool = False


REGISTRY: dict[str, Measure] = {}


def measure(
    name: str,
    family: str,
    adjustment: Adjustment | None = None,
    direction: int = 1,
    probe: bool = False,
) -> Callable[[MeasureFn], MeasureFn]:
    """Register ``fn(ctx) -> float`` as measure ``name``; the adjustment defaults to Jiang's
    rule (``log`` for names starting with ``log_``, else ``sqrt``); ``direction`` is -1 for
    a measure whose larger values predict a smaller gap (see :class:`Measure`);
    ``probe``: it probes the training run (``MeasureContext.optimizer``, many minibatches)
    rather than measuring the trained model, so ``measures: all`` leaves it out."""
    rule: Adjustment = adjustment or ("log" if name.startswith("log_") else "sqrt")
    if direction not in (1, -1):
        raise ValueError(f"measure {name!r}: direction must be 1 or -1, got {direction}")

    def wrap(fn: MeasureFn) -> MeasureFn:
        if name in REGISTRY and REGISTRY[name].fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"measure {name!r} is registered twice")
        REGISTRY[name] = Measure(name, fn, family, rule, direction, probe)
        return fn

    return wrap


def registry() -> dict[str, Measure]:
    """Every measure, after loading the plugin files in ``measures/``."""
    from shiftbench.plugins.files import load_all

    load_all("measures")
    return REGISTRY


def available() -> list[str]:
    """Sorted names of every registered measure."""
    return sorted(registry())


def families() -> dict[str, list[str]]:
    """Measure names grouped by family (sorted)."""
    groups: dict[str, list[str]] = {}
    for name in available():
        groups.setdefault(REGISTRY[name].family, []).append(name)
    return groups


def size_adjusted(values: Mapping[str, float], m: int) -> dict[str, float]:
    """Jiang et al.'s size adjustment of raw values for ``m`` training examples."""
    table = registry()
    out: dict[str, float] = {}
    for name, value in values.items():
        rule = table[name].adjustment
        if rule == "log":
            out[name] = 0.5 * (value - math.log(m))
        elif rule == "sqrt":
            out[name] = math.sqrt(value / m) if value >= 0 else math.nan
        else:
            out[name] = value
    return out


class MeasureContext:
    """Everything a measure reads, with the expensive shared pieces computed once.

    The model is in eval mode while measured. Perturbed or folded weights always live in
    copies or in tensors passed to ``torch.func.functional_call``: the model's own
    parameters are never written.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data: tuple[Tensor, Tensor],
        init_model: nn.Module | None = None,
        *,
        config: MeasureConfig | None = None,
        history: Sequence[tuple[int, float]] | None = None,
        heldout_data: tuple[Tensor, Tensor] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        x, y = train_data
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"train_data needs as many labels as inputs (>0), got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        self.model = model
        self.init_model = init_model
        self.x, self.y = x, y
        self.config = config or MeasureConfig()
        self.history = list(history) if history is not None else None
        self.heldout_data = heldout_data
        self.optimizer = optimizer
        self._memo: dict[str, object] = {}

    def memo(self, key: str, make: Callable[[], object]) -> object:
        """``make()`` computed once per context under ``key``: plugins share work through
        it (an exception is re-raised for every caller, without recomputing)."""
        if key not in self._memo:
            try:
                self._memo[key] = make()
            except Exception as error:
                self._memo[key] = error
        value = self._memo[key]
        if isinstance(value, Exception):
            raise value
        return value

    @property
    def m(self) -> int:
        """Number of training examples."""
        return int(self.x.shape[0])

    def generator(self, name: str) -> torch.Generator:
        """A generator on the data's device seeded by ``config.seed`` and the measure name,
        so each measure's draws do not depend on which other measures ran."""
        gen = torch.Generator(device=self.x.device)
        gen.manual_seed(self.config.seed * 1_000_003 + zlib.crc32(name.encode()))
        return gen

    @cached_property
    def subset(self) -> tuple[Tensor, Tensor]:
        """``config.subset`` training examples, drawn once without replacement."""
        if self.m <= self.config.subset:
            return self.x, self.y
        order = torch.randperm(self.m, generator=self.generator("subset"), device=self.x.device)
        keep = order[: self.config.subset]
        return self.x[keep], self.y[keep]

    @cached_property
    def logits(self) -> Tensor:
        """Logits of the whole training set."""
        return mu.predict(self.model, self.x, self.config.eval_batch_size)

    @cached_property
    def heldout_logits(self) -> tuple[Tensor, Tensor]:
        """Logits and labels of the held-out ID split."""
        if self.heldout_data is None:
            raise Undefined("no heldout_data given")
        hx, hy = self.heldout_data
        return mu.predict(self.model, hx, self.config.eval_batch_size), hy

    @cached_property
    def log_likelihood(self) -> float:
        """Training log-likelihood: minus the summed cross-entropy."""
        return -float(F.cross_entropy(self.logits, self.y, reduction="sum"))

    @cached_property
    def margin(self) -> float:
        """Jiang et al.'s margin: the 10th percentile of ``f_y(x) - max_{j != y} f_j(x)``
        over the training set, its absolute value with ``config.margin="reference"`` (the
        reference's ``_margin(...).abs()``); with ``"paper"`` it must be positive for the
        margin measures."""
        value = float(mu.tenth_percentile_margin(self.logits, self.y, self.config.margin))
        if self.config.margin == "reference":
            return abs(value)
        if value <= 0:
            raise Undefined(
                f"10th-percentile margin is {value:.3g} <= 0 (more than 10% of "
                "training examples misclassified)"
            )
        return value

    @cached_property
    def folded(self) -> nn.Module:
        """A copy of the model with every BatchNorm folded into its conv/linear layer."""
        return mu.fold_batchnorm(self.model, self.x[:2])

    @cached_property
    def perturbable(self) -> nn.Module:
        """The folded model with each folded BatchNorm kept, reset to scale 1 and shift 0
        (the reference's ``_reparam``): the model the PAC-Bayes search perturbs."""
        return mu.fold_batchnorm(self.model, self.x[:2], reset=True)

    @cached_property
    def folded_init(self) -> nn.Module:
        """The same folding applied to the model at initialization."""
        if self.init_model is None:
            raise Undefined("no init_model given")
        return mu.fold_batchnorm(self.init_model, self.x[:2])

    @cached_property
    def layers(self) -> list[mu.Layer]:
        """The folded model's Linear and Conv2d layers in forward order."""
        return mu.layers(self.folded, self.x[:2])

    @cached_property
    def init_layers(self) -> list[mu.Layer]:
        """The folded init model's layers, matched one to one with ``layers``."""
        init = mu.layers(self.folded_init, self.x[:2])
        if [lay.name for lay in init] != [lay.name for lay in self.layers]:
            raise Undefined("init_model has a different architecture")
        return init

    @cached_property
    def flat_weights(self) -> Tensor:
        """The folded model's layer weights, biases excluded, flattened in layer order: the
        parameter set of every counting or summing measure (module docstring)."""
        return torch.cat([layer.weight.flatten() for layer in self.layers])

    @cached_property
    def omega(self) -> int:
        """The parameter count of every measure (module docstring): the folded weights'."""
        return self.flat_weights.numel()

    @cached_property
    def flat_init_weights(self) -> Tensor:
        """The folded init model's layer weights, flattened in the same order."""
        return torch.cat([layer.weight.flatten() for layer in self.init_layers])

    def offsets(self, from_init: bool) -> Tensor:
        """``w - w^0`` (``from_init``) or ``w`` over the folded weights: the distance to a
        PAC-Bayes prior's centre."""
        return self.flat_weights - self.flat_init_weights if from_init else self.flat_weights

    @cached_property
    def accuracy_on_subset(self) -> float:
        """Training accuracy of the (folded) model on ``subset``."""
        sx, sy = self.subset
        return float(
            (mu.predict(self.folded, sx, self.config.eval_batch_size).argmax(1) == sy)
            .float()
            .mean()
        )

    @cached_property
    def grad_stats(self) -> mu.GradStats:
        """Per-example gradient moments and the Fisher diagonal on ``subset``."""
        sx, sy = self.subset
        return mu.gradient_statistics(self.folded, sx, sy)


@contextmanager
def eval_mode(*models: nn.Module | None) -> Iterator[None]:
    """Put models in eval mode and restore every submodule's own mode afterwards."""
    saved = [
        (mod, mod.training) for model in models if model is not None for mod in model.modules()
    ]
    for model in models:
        if model is not None:
            model.eval()
    try:
        yield
    finally:
        for mod, training in saved:
            mod.training = training


def compute_with_reasons(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    init_model: nn.Module | None = None,
    names: Sequence[str] | None = None,
    *,
    config: MeasureConfig | None = None,
    history: Sequence[tuple[int, float]] | None = None,
    heldout_data: tuple[Tensor, Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    adjusted: bool = False,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Measure values by name (NaN where undefined) and the reason for each NaN.

    ``optimizer`` (the trial's, at the end of training) is read by the optimizer probes.
    ``adjusted=True`` applies :func:`size_adjusted`; ``timings``, if given, receives each
    measure's wall-clock seconds (shared cached work counts for the first measure using it).
    """
    table = registry()
    wanted = list(names) if names is not None else sorted(table)
    unknown = [n for n in wanted if n not in table]
    if unknown:
        raise KeyError(
            f"unknown measure(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(table))}"
        )
    ctx = MeasureContext(
        model,
        train_data,
        init_model,
        config=config,
        history=history,
        heldout_data=heldout_data,
        optimizer=optimizer,
    )
    values: dict[str, float] = {}
    reasons: dict[str, str] = {}
    with eval_mode(model, init_model):
        for name in wanted:
            start = time.perf_counter()
            values[name], reason = _run_one(table[name], ctx)
            if reason:
                reasons[name] = reason
            if timings is not None:
                timings[name] = time.perf_counter() - start
    if adjusted:
        values = size_adjusted(values, ctx.m)
    return values, reasons


def compute(
    model: nn.Module,
    train_data: tuple[Tensor, Tensor],
    init_model: nn.Module | None = None,
    names: Sequence[str] | None = None,
    **context: object,
) -> dict[str, float]:
    """Measure values by name, NaN where a measure is undefined (see ``compute_with_reasons``
    for the keyword context: ``config``, ``history``, ``heldout_data``, ``optimizer``,
    ``adjusted``)."""
    values, _ = compute_with_reasons(model, train_data, init_model, names, **context)
    return values


def _run_one(entry: Measure, ctx: MeasureContext) -> tuple[float, str]:
    try:
        value = float(entry.fn(ctx))
    except Undefined as why:
        return math.nan, str(why)
    except Exception as error:  # a measure's failure must not stop the others
        return math.nan, f"{type(error).__name__}: {error}"
    if not math.isfinite(value):
        return math.nan, f"non-finite value {value}"
    return value, ""
