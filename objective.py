"""The shiftbench Benchopt objective: train a classifier on the training environments of a
data set and evaluate it, at checkpoints, in and out of distribution.

Metrics: ``id_acc`` is the mean accuracy over the held-out part of each training environment
(DomainBed's training-domain validation score), ``oracle_acc`` the accuracy on the test
environment's held-out part (DomainBed's test-domain validation score). Three test accuracies:
``test_in_acc`` is the test environment's in-split (80%), the number DomainBed's tables report
(``env<t>_in_acc``, ``model_selection.py``); ``avg_test_acc`` is Naganuma et al.'s
(``train_with_wandb.py``: ``(1 - holdout_fraction) * in + holdout_fraction * out``), the number
the paper's tables report; ``ood_acc`` is the accuracy on the whole test environment (its
examples pooled). ``train_loss``/``train_acc`` are on the pooled training splits;
``env<i>_in_acc``/``env<i>_out_acc`` per split and ``env<i>_acc`` on each whole environment not
trained on. With ``target_loss`` > 0 a run
stops at the first checkpoint whose training cross-entropy is at or below it
(``steps`` is then the cap), as in Jiang et al. (2020). ``pretrained`` is ``none`` (a
timm model trains from scratch) or the path of a local weights file (ImageNet weights,
``.pth``/``.safetensors``; the classifier head stays fresh): the ledger's
``obj.pretrained`` column says which. ``irm_loss`` is IRM's loss after the penalty switches
on: ``domainbed`` (DomainBed's ``IRM.update``, the default) or ``irm_paper`` (divided by the
penalty weight, as the IRM paper's script); see :class:`shiftbench.training.algorithms.IRM`.
``irm_reset_to`` is the optimizer IRM restarts with when the penalty switches on: ``adam``
(the default: DomainBed's ``IRM.update`` and Naganuma et al.'s fork both build a fresh
``torch.optim.Adam(lr, weight_decay)`` there, whatever optimizer the run compares) or
``same`` (a fresh optimizer of the run's own kind: an extension, so that an IRM run keeps
the optimizer under comparison after the switch; reports label it).

``measure_envs`` are the examples the generalization measures may use (the dataset's
``measure_fraction`` of each training environment), disjoint from the training part and
from the held-out part behind ``id_acc``, so no measure sees the IID target's examples.
"""

from pathlib import Path

from benchopt import BaseObjective
from benchopt.stopping_criterion import SufficientProgressCriterion

from shiftbench.data.image_folder import with_augmentation
from shiftbench.models.registry import (
    MODELS,
    SIZED_FAMILIES,
    check_size,
    create_model,
    is_model,
    vectorizable,
)
from shiftbench.store.schema import env_column
from shiftbench.training.algorithms import ALGORITHMS, IRM_LOSS_SCALINGS, create_algorithm
from shiftbench.training.primitives import evaluate_all, pick_device, seed_everything


class Objective(BaseObjective):
    name = "shiftbench"
    url = "https://github.com/shiftbench/shiftbench"
    min_benchopt_version = "1.6"
    sampling_strategy = "callback"
    # Under `benchopt run`, train for exactly `steps` steps (the solver stops there), as the
    # shiftbench runner does, rather than stopping early on a loss plateau.
    stopping_criterion = SufficientProgressCriterion(strategy="callback", patience=10**9)
    parameters = {
        "steps": [400],
        "eval_every": [50],
        "target_loss": [0.0],
        "model": ["cnn"],
        "depth": [2],
        "width": [32],
        "dropout": [0.0],
        "pretrained": ["none"],
        "algorithm": ["erm"],
        "irm_lambda": [100.0],
        "irm_anneal_iters": [500],
        "irm_reset_to": ["adam"],
        "irm_loss": ["domainbed"],
        "seed": [0],
    }
    test_dataset_name = "colored_digits"
    device = "auto"

    @staticmethod
    def ensemble_model(params: dict) -> str | None:
        """The model family trials with these parameters train, when they can be trained as
        one vectorized ensemble (ERM, no dropout, a family registered ``vectorizable``);
        else None. The sweep's ensemble planner asks this hook."""
        model = params.get("model")
        erm = params.get("algorithm", "erm") == "erm" and params.get("dropout", 0.0) == 0
        return model if erm and vectorizable(model) else None

    @staticmethod
    def check_parameters(params: dict) -> None:
        """Reject impossible objective parameters before any trial runs."""
        if params["target_loss"] < 0:
            raise ValueError(f"target_loss must be >= 0, got {params['target_loss']}")
        if params["steps"] < 1 or params["eval_every"] < 1:
            raise ValueError(
                f"steps and eval_every must be >= 1, got {params['steps']}, {params['eval_every']}"
            )
        if params["algorithm"] not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if params["irm_reset_to"] not in ("same", "adam"):
            raise ValueError(
                f"irm_reset_to must be 'same' or 'adam', got {params['irm_reset_to']!r}"
            )
        if params["irm_loss"] not in IRM_LOSS_SCALINGS:
            choices = ", ".join(IRM_LOSS_SCALINGS)
            raise ValueError(f"irm_loss must be one of {choices}, got {params['irm_loss']!r}")
        if params["model"] in SIZED_FAMILIES:
            check_size(params["depth"], params["width"], params["dropout"])
        elif not is_model(params["model"]):
            raise ValueError(f"unknown model {params['model']!r}; see shiftbench.models.registry")
        if params["pretrained"] != "none":
            if params["model"] in MODELS:
                raise ValueError(
                    f"pretrained weights apply to timm models, not {params['model']!r}"
                )
            if not Path(params["pretrained"]).expanduser().is_file():
                raise ValueError(f"pretrained weights file not found: {params['pretrained']}")
        if params["algorithm"] == "irm":
            create_algorithm(
                "irm",
                penalty_weight=params["irm_lambda"],
                anneal_iters=params["irm_anneal_iters"],
                loss_scaling=params["irm_loss"],
            )

    def set_data(self, data) -> None:
        self.check_parameters({key: getattr(self, key) for key in self.parameters})
        self.data = data
        self.torch_device = pick_device(self.device)
        self.splits = data.splits(self.torch_device)
        self.eval_splits = [
            (with_augmentation(inn, False), with_augmentation(out, False))
            for inn, out in self.splits
        ]
        self.training = data.training_indices
        self.train_envs = [self.splits[i][0] for i in self.training]
        self.measure_envs = data.measure_sets(self.torch_device)

    def build_model(self):
        """The trial's model at initialization (seeded, so the same for every solver)."""
        seed_everything(self.seed)
        if self.model in SIZED_FAMILIES:
            kwargs = {"depth": self.depth, "width": self.width, "dropout": self.dropout}
        elif self.model in MODELS:
            kwargs = {}
        else:  # timm: ImageNet weights only from a local file, never downloaded
            pretrained = (
                None if self.pretrained == "none" else str(Path(self.pretrained).expanduser())
            )
            kwargs = {"pretrained_file": pretrained}
        return create_model(self.model, self.data.input_shape, self.data.num_classes, **kwargs).to(
            self.torch_device
        )

    def get_objective(self) -> dict:
        model = self.build_model()
        if self.algorithm == "irm":
            algorithm = create_algorithm(
                "irm",
                penalty_weight=self.irm_lambda,
                anneal_iters=self.irm_anneal_iters,
                loss_scaling=self.irm_loss,
            )
        else:
            algorithm = create_algorithm(self.algorithm)
        return {
            "model": model,
            "train_envs": self.train_envs,
            "algorithm": algorithm,
            "steps": self.steps,
            "seed": self.seed,
            "reset_to": self.irm_reset_to,
        }

    def evaluate_result(self, model) -> dict:
        metrics: dict[str, float] = {}
        train_loss = train_correct = train_n = 0.0
        id_accs, id_losses = [], []
        flat = evaluate_all(model, [env for pair in self.eval_splits for env in pair])
        for i, (ev_in, ev_out) in enumerate(zip(flat[::2], flat[1::2])):
            metrics[env_column(i, "in_acc")] = ev_in.acc
            metrics[env_column(i, "out_acc")] = ev_out.acc
            if i in self.training:
                train_loss += ev_in.loss * ev_in.n
                train_correct += ev_in.acc * ev_in.n
                train_n += ev_in.n
                id_accs.append(ev_out.acc)
                id_losses.append(ev_out.loss)
                continue
            n = ev_in.n + ev_out.n
            metrics[env_column(i, "acc")] = (ev_in.acc * ev_in.n + ev_out.acc * ev_out.n) / n
            if i == self.data.test_env:
                metrics["ood_acc"] = metrics[env_column(i, "acc")]
                metrics["ood_loss"] = (ev_in.loss * ev_in.n + ev_out.loss * ev_out.n) / n
                metrics["oracle_acc"] = ev_out.acc
                metrics["test_in_acc"] = ev_in.acc
                fraction = self.data.holdout_fraction
                metrics["avg_test_acc"] = (1 - fraction) * ev_in.acc + fraction * ev_out.acc
        metrics["train_loss"] = train_loss / train_n
        metrics["train_acc"] = train_correct / train_n
        metrics["id_acc"] = sum(id_accs) / len(id_accs)
        metrics["id_loss"] = sum(id_losses) / len(id_losses)
        return {"value": metrics["train_loss"], **metrics}

    def get_one_result(self) -> dict:
        return {"model": self.build_model()}
