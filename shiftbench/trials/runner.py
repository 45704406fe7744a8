"""Run one trial in this process: dataset -> objective -> solver.run(callback) -> rows.

A :class:`TrialRunner` lives as long as its worker: plugin classes are
imported once and loaded data sets are kept (keyed by data set and
parameters), so a worker pays for ``import torch`` and data loading once,
not per trial. Every exception becomes a ``failed`` row with its error text;
a non-finite training loss ends the run as ``diverged``.
"""

from __future__ import annotations

import math
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import torch

from shiftbench import faults
from shiftbench.measures.config import DEFAULT_CONFIG, MeasureConfig
from shiftbench.measures.core import compute_with_reasons
from shiftbench.plugins import registry
from shiftbench.store import artifacts, checkpoint, schema
from shiftbench.training.primitives import pick_device
from shiftbench.trials.accel import AUTO, Accel
from shiftbench.trials.provenance import device_name
from shiftbench.trials.trial import Trial

DATA_CACHE_SIZE = 2
ERROR_CHARS = 4000
# Stores one model of the running trial: (file name, model, step).
Save = Callable[[str, torch.nn.Module, int], None]


@dataclass
class TrialOutcome:
    """What a worker sends back: the trial's ledger rows and its status; on a GPU, the
    trial's peak memory (what the caching allocator reserved) and the GPU's total memory,
    and whether it failed by running out of GPU memory (the sweep retries it alone)."""

    trial_id: str
    status: str
    rows: list[dict[str, Any]]
    error: str = ""
    out_of_memory: bool = False
    peak_memory: int = 0
    device_memory: int = 0


class Checkpointer:
    """The Benchopt-style callback: evaluates the objective every ``eval_every`` steps and at
    the end, times training without the evaluations, stops on a non-finite loss, and stops
    once the training cross-entropy reaches ``target_loss`` (when > 0). With ``resume`` it
    saves the whole training state when that is due, and :meth:`restore` continues from it."""

    def __init__(
        self,
        objective,
        solver,
        steps: int,
        eval_every: int,
        target_loss: float = 0.0,
        save: Save | None = None,
        resume: checkpoint.Checkpoints | None = None,
    ) -> None:
        self.objective, self.solver = objective, solver
        self.steps, self.eval_every, self.target_loss = steps, eval_every, target_loss
        self.save = save  # given: the weights are stored at every checkpoint
        self.resume = resume
        self.step = 0
        self.elapsed = 0.0
        self.diverged = False
        self.curve: list[dict[str, Any]] = []
        self.resumed_from = 0  # the step a resumed run continued from
        self._restored = False  # the next call is at the restored step, evaluated before
        self._resumed = time.perf_counter()

    def restore(self) -> None:
        """Continue from ``resume``'s checkpoint, if there is one: the solver's state, the
        curve so far, then the RNG states (last, so that nothing draws after them)."""
        saved = self.resume.load() if self.resume else None
        if saved is None:
            return
        step, state = saved
        self.solver.restore(state["solver"], step)
        self.step = self.resumed_from = step
        self.elapsed, self.curve = state["elapsed"], state["curve"]
        self._restored = True
        checkpoint.set_rng_state(state["rng"])

    def __call__(self) -> bool:
        if self._restored:
            self._restored = False
            return self._next()
        checkpoint = self.step % self.eval_every == 0 or self.step == self.steps
        device = self.objective.torch_device
        if checkpoint and device.type == "cuda":
            torch.cuda.synchronize(device)  # the GPU's queued steps count as training time
        now = time.perf_counter()
        self.elapsed += now - self._resumed
        if checkpoint:
            with self.solver.accel.autocast(device):
                metrics = self.objective.evaluate_result(**self.solver.get_result())
            metrics.pop("value", None)
            self.curve.append(schema.checkpoint(self.step, self.elapsed, metrics))
            if self.save:
                self.save(f"step-{self.step}", self.solver.model, self.step)
            if not math.isfinite(metrics["train_loss"]):
                self.diverged = True
                return False
            if metrics["train_loss"] <= self.target_loss:
                return False
        if self.step >= self.steps:
            return False
        if self.resume and self.resume.due(self.step, self.steps):
            self._save_state()
        return self._next()

    def _save_state(self) -> None:
        state = {
            "solver": self.solver.training_state(),
            "elapsed": self.elapsed,
            "curve": self.curve,
            "rng": checkpoint.rng_state(),
        }
        self.resume.save(state, self.step)

    def _next(self) -> bool:
        self.step += 1
        self._resumed = time.perf_counter()
        return True


@dataclass(frozen=True)
class MeasureJob:
    """Measures to compute on a finished trial's stored model: its final checkpoint's step,
    its training-loss history (from the ledger) and the stored weights' path."""

    trial: Trial
    attempt: int
    step: int
    names: tuple[str, ...]
    history: tuple[tuple[int, float], ...]
    path: str


@dataclass
class _Trained:
    """The parts of a solver that the measures read, for a model loaded from storage (its
    optimizer state is not stored: the optimizer probes are undefined there)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None = None


class TrialRunner:
    """Runs trials in-process, reusing plugins and loaded data across trials; with a
    ``sink`` it stores each trial's weights as its study's ``keep`` setting asks."""

    def __init__(
        self,
        provenance: dict[str, Any],
        device: str = "auto",
        accel: Accel = AUTO,
        sink: artifacts.Sink | None = None,
    ) -> None:
        self.provenance = provenance
        self.device = pick_device(device)
        self.accel = accel.resolve(self.device)
        self.sink = sink
        self._data: OrderedDict[Any, dict] = OrderedDict()

    def load_data(self, trial: Trial) -> dict:
        """The data set's ``get_data()`` output, cached per (data set, parameters)."""
        key = trial.data_key
        if key not in self._data:
            dataset = registry.dataset_class(trial.dataset).get_instance(
                **dict(trial.dataset_params)
            )
            self._data[key] = dataset.get_data()
            while len(self._data) > DATA_CACHE_SIZE:
                self._data.popitem(last=False)
        self._data.move_to_end(key)
        return self._data[key]

    def run(
        self,
        trial: Trial,
        study: str,
        attempt: int = 0,
        measures: tuple[str, ...] = (),
        measure_config: MeasureConfig = DEFAULT_CONFIG,
    ) -> TrialOutcome:
        """Train and evaluate one trial, computing ``measures`` at its end with
        ``measure_config``; never raises for a trial's own failure."""
        started = datetime.now(UTC)
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        out_of_memory = False
        try:
            faults.hit("trial.start", trial.trial_id)
            save = self._saver(trial, study, attempt)
            resume = self.checkpoints(study, [trial.trial_id])
            with self.accel.cpu_modes():
                status, curve, extra = self._train(trial, measures, measure_config, save, resume)
            error = ""
        except Exception as exc:
            status, curve, extra = schema.FAILED, [], {}
            error = _error_text(exc)
            out_of_memory = isinstance(exc, torch.cuda.OutOfMemoryError)
        peak = total = 0
        if cuda:
            peak = torch.cuda.max_memory_reserved(self.device)
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.empty_cache()  # give what this trial held back to the GPU's other trials
            extra = {**extra, "peak_memory_mb": peak / 2**20}
        rows = schema.trial_rows(
            trial, study, attempt, status, error, curve, extra, started, self.row_provenance()
        )
        return TrialOutcome(trial.trial_id, status, rows, error, out_of_memory, peak, total)

    def _saver(self, trial: Trial, study: str, attempt: int) -> Save | None:
        if self.sink is None or self.sink.keep == "none":
            return None

        def save(name: str, model: torch.nn.Module, step: int) -> None:
            self.sink.save(study, trial, attempt, name, model.state_dict(), step)

        return save

    def checkpoints(self, study: str, trial_ids: list[str]) -> checkpoint.Checkpoints | None:
        """Where these trials (one, or an ensemble) save their training state, when the
        study asks for it (``checkpoint_every``)."""
        if self.sink is None or not self.sink.checkpoint_every:
            return None
        return checkpoint.Checkpoints.of(
            self.sink.store, study, trial_ids, self.sink.checkpoint_every
        )

    def measure(
        self, job: MeasureJob, study: str, measure_config: MeasureConfig = DEFAULT_CONFIG
    ) -> TrialOutcome:
        """Compute ``job``'s measures on the stored model, without training: one ``measured``
        row at the trial's final checkpoint (:func:`shiftbench.store.ledger.read` merges it into
        that checkpoint's row). The initial model is rebuilt from the trial's seed, as
        training built it. A failure returns no row and the error text."""
        started = datetime.now(UTC)
        try:
            objective = self.objective(job.trial)
            model = objective.build_model()
            init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            state, _ = artifacts.load_state(job.path)
            model.load_state_dict(state)
            curve = [{"step": s, "train_loss": loss} for s, loss in job.history]
            extra = self._measures(
                objective, _Trained(model), init_state, curve, job.names, measure_config
            )
        except Exception as exc:
            return TrialOutcome(job.trial.trial_id, "measure_failed", [], _error_text(exc))
        row = schema.measured_row(
            job.trial.trial_id, study, job.attempt, job.step, extra, started, self.row_provenance()
        )
        return TrialOutcome(job.trial.trial_id, schema.MEASURED, [row])

    def row_provenance(self, accel: Accel | None = None) -> dict[str, Any]:
        """What every ledger row of this runner records about where and how it ran:
        this runner's settings, or ``accel`` for a trial that ran with others."""
        return {
            **self.provenance,
            **schema.provenance(device=device_name(self.device)),
            **(accel or self.accel).columns(),
        }

    def objective(self, trial: Trial):
        """The trial's objective on this runner's device, with its data set (cached) loaded."""
        objective = registry.objective_class().get_instance(
            **dict(trial.objective_params), seed=trial.seed
        )
        objective.device = str(self.device)
        objective.set_data(**self.load_data(trial))
        return objective

    @staticmethod
    def solver(trial: Trial):
        """The trial's solver with its hyperparameters (not yet given an objective)."""
        return registry.solver_class(trial.solver).get_instance(**dict(trial.solver_params))

    def _train(
        self,
        trial: Trial,
        measures: tuple[str, ...],
        measure_config: MeasureConfig,
        save: Save | None = None,
        resume: checkpoint.Checkpoints | None = None,
    ):
        params = dict(trial.objective_params)
        objective = self.objective(trial)
        solver = self.solver(trial)
        solver.accel = self.accel
        solver.set_objective(**objective.get_objective())
        init_state = {k: v.detach().clone() for k, v in solver.model.state_dict().items()}
        keep_every = save if self.sink and self.sink.keep == "checkpoints" else None
        callback = Checkpointer(
            objective,
            solver,
            params["steps"],
            params["eval_every"],
            params["target_loss"],
            keep_every,
            resume,
        )
        callback.restore()
        solver.run(callback)
        status = schema.DIVERGED if callback.diverged else schema.DONE
        if save:
            save(artifacts.FINAL, solver.model, callback.curve[-1]["step"])
        extra: dict[str, Any] = {"resumed_from_step": callback.resumed_from} if resume else {}
        if measures and status == schema.DONE:
            extra |= self._measures(
                objective, solver, init_state, callback.curve, measures, measure_config
            )
        examples = sum(len(env) for env in objective.train_envs)
        per_step = int(solver.batch_size) * len(objective.train_envs)
        for point in callback.curve:
            point["epoch"] = point["step"] * per_step / examples
        return status, callback.curve, extra

    def _measures(
        self, objective, solver, init_state, curve, names, config: MeasureConfig
    ) -> dict[str, Any]:
        model = solver.model
        init_model = objective.build_model()
        init_model.load_state_dict(init_state)
        train = objective.train_envs
        x = torch.cat([env.x for env in train])
        y = torch.cat([env.y for env in train])
        # the measure part of the training environments: neither trained on nor the IID
        # test set (the out split) that defines gap_iid, and never a shifted environment
        heldout = objective.measure_envs
        values, reasons = compute_with_reasons(
            model,
            (x, y),
            init_model=init_model,
            names=list(names),
            config=config,
            history=[(p["step"], p["train_loss"]) for p in curve],
            heldout_data=(
                (torch.cat([e.x for e in heldout]), torch.cat([e.y for e in heldout]))
                if heldout
                else None
            ),
            optimizer=solver.optimizer,
        )
        counts = {
            "n_train_examples": len(x),
            "n_measure_examples": sum(len(e) for e in heldout),
            "n_iid_test_examples": sum(len(objective.splits[i][1]) for i in objective.training),
        }
        return schema.measure_columns(values, asdict(config), counts, reasons)


def _error_text(exc: BaseException) -> str:
    """The exception and the innermost frames, short enough for a ledger cell."""
    text = "".join(traceback.format_exception(exc, limit=-4))
    return text[-ERROR_CHARS:]
