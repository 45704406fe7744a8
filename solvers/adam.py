"""Adam with coupled L2 weight decay, as ``torch.optim.Adam`` (the gradient includes wd * w)."""

import torch

from shiftbench.training.loop import AdamSolver


class Solver(AdamSolver):
    name = "adam"
    optimizer_class = torch.optim.Adam
