"""RMSProp (``torch.optim.RMSprop``): smoothing ``alpha`` searched as log10(1 - alpha)."""

import torch

from shiftbench.spec.search import LogOneMinus, LogUniform
from shiftbench.training.loop import COMMON_PARAMETERS, COMMON_SPACE, TorchSolver


class Solver(TorchSolver):
    name = "rmsprop"
    optimizer_class = torch.optim.RMSprop
    parameters = {**COMMON_PARAMETERS, "lr": [1e-3], "alpha": [0.99], "eps": [1e-8]}
    search_space = {
        **COMMON_SPACE,
        "lr": LogUniform(1e-5, 1e-1),
        "alpha": LogOneMinus(-3, -1),
        "eps": LogUniform(1e-10, 1e-3),
    }

    def validate(self) -> None:
        super().validate()
        if not (0.0 <= self.alpha < 1.0 and self.eps > 0):
            raise ValueError(f"need 0 <= alpha < 1 and eps > 0, got {self.alpha}, {self.eps}")

    def optimizer_kwargs(self) -> dict:
        return {**super().optimizer_kwargs(), "alpha": self.alpha, "eps": self.eps}
