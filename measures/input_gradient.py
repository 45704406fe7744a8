"""Input-gradient norm: how fast the loss changes with the input (Novak et al., ICLR 2018,
"Sensitivity and Generalization in Neural Networks", use the input Jacobian's norm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftbench.measures.core import MeasureContext, measure


@measure("input_grad_norm", family="input_gradient", adjustment="none")
def input_grad_norm(ctx: MeasureContext) -> float:
    """``mean_i ||grad_x l(f(x_i), y_i)||_2`` over ``config.subset`` training examples, with
    ``l`` the cross-entropy (each example's gradient is its own: the loss is summed)."""
    x, y = ctx.subset
    x = x.detach().clone().requires_grad_(True)
    loss = F.cross_entropy(ctx.model(x), y, reduction="sum")
    (gx,) = torch.autograd.grad(loss, x)
    return float(gx.flatten(1).norm(dim=1).mean())
