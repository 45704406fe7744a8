"""SGD with heavy-ball momentum and coupled L2 weight decay (``torch.optim.SGD``)."""

from shiftbench.training.loop import MomentumSolver


class Solver(MomentumSolver):
    name = "momentum"
