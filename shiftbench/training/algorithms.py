"""Training algorithms (DomainBed's sense): how per-environment minibatches become a loss.

``ERM`` pools the environments; ``IRM`` (Arjovsky et al. 2019) adds the
invariance penalty with DomainBed's annealing: weight 1 for ``anneal_iters``
steps, then ``penalty_weight``, with the optimizer reset at the switch (see
``reset_at``). The loss is DomainBed's (``IRM.update`` in DomainBed's
``domainbed/algorithms.py``) unless ``loss_scaling="irm_paper"`` asks for the IRM
paper's division by the weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from shiftbench.training.primitives import flat_predictions

Batches = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class ERM:
    """Empirical risk minimization: mean cross-entropy over the pooled batches."""

    reset_at: int | None = None

    def loss(self, model: nn.Module, batches: Batches, step: int) -> torch.Tensor:
        x = torch.cat([xb for xb, _ in batches])
        y = torch.cat([yb for _, yb in batches])
        return F.cross_entropy(*flat_predictions(model(x), y))


IRM_LOSS_SCALINGS = ("domainbed", "irm_paper")


@dataclass(frozen=True)
class IRM:
    """Invariant risk minimization (IRMv1) with DomainBed's penalty annealing.

    ``loss_scaling`` says what happens to the loss ``mean_e(nll_e + w * penalty_e)`` once
    the weight ``w`` exceeds 1:

    - ``domainbed`` (default): nothing, as DomainBed's ``IRM.update``
      (``domainbed/algorithms.py``), which Naganuma et al. (2023) ran.
    - ``irm_paper``: divided by ``w``, as the IRM paper's own script
      (``InvariantRiskMinimization/code/colored_mnist/main.py``: ``loss /= penalty_weight``),
      which keeps the gradient scale of plain SGD steps after the switch.
    """

    penalty_weight: float = 100.0
    anneal_iters: int = 500
    loss_scaling: str = "domainbed"

    def __post_init__(self) -> None:
        if self.penalty_weight < 0 or self.anneal_iters < 0:
            raise ValueError("irm penalty_weight and anneal_iters must be >= 0")
        if self.loss_scaling not in IRM_LOSS_SCALINGS:
            raise ValueError(
                f"irm loss_scaling must be one of {', '.join(IRM_LOSS_SCALINGS)}, "
                f"got {self.loss_scaling!r}"
            )

    @property
    def reset_at(self) -> int | None:
        """The step at which DomainBed resets the optimizer (the penalty switches on)."""
        return self.anneal_iters if self.anneal_iters > 0 else None

    @staticmethod
    def penalty(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Squared gradient of the risk w.r.t. a dummy classifier scale, unbiased over
        two halves of the batch."""
        scale = torch.ones((), device=logits.device, requires_grad=True)
        loss_1 = F.cross_entropy(logits[::2] * scale, y[::2])
        loss_2 = F.cross_entropy(logits[1::2] * scale, y[1::2])
        grad_1 = torch.autograd.grad(loss_1, [scale], create_graph=True)[0]
        grad_2 = torch.autograd.grad(loss_2, [scale], create_graph=True)[0]
        return grad_1 * grad_2

    def loss(self, model: nn.Module, batches: Batches, step: int) -> torch.Tensor:
        weight = self.penalty_weight if step >= self.anneal_iters else 1.0
        x = torch.cat([xb for xb, _ in batches])
        logits = model(x)
        nll = logits.new_zeros(())
        penalty = logits.new_zeros(())
        start = 0
        for _, yb in batches:
            env_logits = logits[start : start + len(yb)]
            start += len(yb)
            nll = nll + F.cross_entropy(env_logits, yb)
            penalty = penalty + self.penalty(env_logits, yb)
        loss = (nll + weight * penalty) / len(batches)
        if self.loss_scaling == "irm_paper" and weight > 1.0:
            return loss / weight
        return loss


ALGORITHMS = {"erm": ERM, "irm": IRM}


def create_algorithm(name: str, **params: float | str) -> ERM | IRM:
    """An algorithm by name with its hyperparameters."""
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm {name!r}; one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name](**params)
