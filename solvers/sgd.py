"""Plain stochastic gradient descent with coupled L2 weight decay (``torch.optim.SGD``)."""

import torch

from shiftbench.spec.search import LogUniform
from shiftbench.training.loop import COMMON_PARAMETERS, COMMON_SPACE, TorchSolver


class Solver(TorchSolver):
    name = "sgd"
    optimizer_class = torch.optim.SGD
    parameters = {**COMMON_PARAMETERS, "lr": [0.1]}
    search_space = {**COMMON_SPACE, "lr": LogUniform(1e-3, 1.0)}
