"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019, ``torch.optim.AdamW``)."""

import torch

from shiftbench.training.loop import AdamSolver


class Solver(AdamSolver):
    name = "adamw"
    optimizer_class = torch.optim.AdamW
