"""Building blocks shared by the measure plugins: batched prediction, margins, BatchNorm
folding, layer discovery, the exact convolution operator norm, per-example gradient
statistics, weight perturbations and the scale bisection.

None of these write to the model they are given: folding works on a deep copy, and
perturbed weights are passed to ``torch.func.functional_call`` as new tensors.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

Params = dict[str, Tensor]
NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


class Undefined(Exception):
    """Raised when a measure is not defined for this model or input; it becomes NaN."""


@torch.no_grad()
def predict(
    model: nn.Module, x: Tensor, batch_size: int = 1024, params: Params | None = None
) -> Tensor:
    """Logits of ``x`` in batches, optionally with replacement parameters ``params``."""
    state = None if params is None else (params, dict(model.named_buffers()))
    outs = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        outs.append(model(xb) if state is None else functional_call(model, state, (xb,)))
    return torch.cat(outs)


def accuracy(
    model: nn.Module, x: Tensor, y: Tensor, params: Params | None = None, batch_size: int = 1024
) -> float:
    """Fraction of ``x`` classified as ``y``."""
    return float((predict(model, x, batch_size, params).argmax(1) == y).float().mean())


def margins(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example margin ``f_y(x) - max_{j != y} f_j(x)``."""
    rows = torch.arange(len(y), device=y.device)
    correct = logits[rows, y]
    others = logits.clone()
    others[rows, y] = -math.inf
    return correct - others.max(1).values


def tenth_percentile_margin(logits: Tensor, y: Tensor, rank: str = "reference") -> Tensor:
    """The 10th percentile of the margins (Jiang et al. 2020, App. C.2), robust to a few
    outliers: the ``m // 10``-th smallest (at least the first) with ``rank="reference"``, as
    the reference's ``_margin`` (``data/generation/measures.py`` line 162: ``kthvalue(m //
    10)``), or the ``ceil(0.1 m)``-th with ``rank="paper"``."""
    values = margins(logits, y)
    k = len(values) // 10 if rank == "reference" else math.ceil(0.1 * len(values))
    return values.kthvalue(max(1, k)).values


def _trace(model: nn.Module, x_probe: Tensor, kinds: tuple[type, ...]) -> list[tuple]:
    """Run one forward pass and list ``(name, module, input, output)`` for each call of a
    module of the given kinds, in call order."""
    calls: list[tuple] = []
    handles = [
        mod.register_forward_hook(
            lambda mod, inp, out, name=name: calls.append((name, mod, inp[0], out))
        )
        for name, mod in model.named_modules()
        if isinstance(mod, kinds)
    ]
    try:
        with torch.no_grad():
            model(x_probe)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def fold_batchnorm(model: nn.Module, x_probe: Tensor, reset: bool = False) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm whose input is exactly the output
    of a Conv2d/Linear folded into that layer with its running statistics:
    ``W' = W * g / sqrt(var + eps)`` and ``b' = (b - mean) * g / sqrt(var + eps) + beta``
    (Ioffe & Szegedy 2015, inference form), the BatchNorm replaced by ``nn.Identity``.

    With ``reset=True`` the BatchNorm stays, reset to scale 1, shift 0, running mean 0 and
    running variance 1 (so it still divides by ``sqrt(1 + eps)``), as the reference's
    ``_reparam`` leaves it (``data/generation/measures.py`` lines 17-35); its scale and
    shift are then parameters that a perturbation moves, as ``_perturbed_model`` does.

    A BatchNorm whose input comes from anything else (e.g. after an activation) stays;
    measures that need a plain conv/linear network then report it. A layer output that also
    feeds a non-module operation besides the BatchNorm is not detected.
    """
    folded = copy.deepcopy(model).eval()
    kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
    producers: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    for name, mod, inp, out in _trace(folded, x_probe, kinds):
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if id(inp) in producers and mod.running_var is not None:
                pairs.append((producers.pop(id(inp)), name))
        else:
            producers[id(out)] = name
    with torch.no_grad():
        for layer_name, bn_name in pairs:
            bn = folded.get_submodule(bn_name)
            _fold_into(folded.get_submodule(layer_name), bn)
            if reset:
                _reset(bn)
            else:
                parent, _, child = bn_name.rpartition(".")
                setattr(folded.get_submodule(parent), child, nn.Identity())
    return folded


def _fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale = (bn.running_var + bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * scale
    if bn.bias is not None:
        new_bias = new_bias + bn.bias
    layer.weight.mul_(scale.view(-1, *[1] * (layer.weight.dim() - 1)))
    layer.bias = nn.Parameter(new_bias.detach().clone())


def _reset(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Scale 1, shift 0, mean 0, variance 1: the reference's ``_reparam`` after folding."""
    bn.running_mean.fill_(0)
    bn.running_var.fill_(1)
    if bn.weight is not None:
        bn.weight.fill_(1)
    if bn.bias is not None:
        bn.bias.fill_(0)


@dataclass(frozen=True)
class Layer:
    """A Linear or Conv2d layer of a (folded) model, with the spatial size of its input."""

    name: str
    module: nn.Module
    input_size: tuple[int, int] | None

    @property
    def weight(self) -> Tensor:
        """The layer's weight, detached."""
        return self.module.weight.detach()

    @property
    def matrix(self) -> Tensor:
        """The weight reshaped to (out, -1): the conv kernel as a matrix (Yoshida & Miyato
        2017, Sec. 3.2), the cheap stand-in for the conv operator."""
        return self.weight.reshape(self.weight.shape[0], -1)


def layers(model: nn.Module, x_probe: Tensor) -> list[Layer]:
    """The Linear and Conv2d layers that ``model`` calls, in call order (first call), with
    each conv's input height and width. Normalization layers left after folding are not
    layers (their affine weights are not part of the layer measures); weights held by any
    other module make the layer list undefined."""
    supported = (nn.Linear, nn.Conv2d)
    others = [
        name
        for name, mod in model.named_modules()
        if not isinstance(mod, (*supported, *NORM_LAYERS))
        and any(True for _ in mod.parameters(False))
    ]
    if others:
        raise Undefined(f"weights outside Linear/Conv2d layers: {', '.join(others[:5])}")
    found: dict[str, Layer] = {}
    for name, mod, inp, _ in _trace(model, x_probe, supported):
        if name not in found:
            size = tuple(inp.shape[-2:]) if isinstance(mod, nn.Conv2d) else None
            found[name] = Layer(name, mod, size)
    if not found:
        raise Undefined("no Linear or Conv2d layer")
    return list(found.values())


def conv_operator_norm(
    weight: Tensor,
    input_size: tuple[int, int],
    *,
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
    circular: bool = False,
) -> float:
    """Spectral norm of the linear map of a 2-D convolution, from the 2-D FFT of its kernel
    (Sedghi, Gupta & Long, ICLR 2019, "The Singular Values of Convolutional Layers", Thm. 6).

    A circular convolution on an ``n1 x n2`` grid is block-diagonalised by the 2-D DFT: its
    singular values are those of the ``c_out x c_in`` matrices ``FFT2(K)[:, :, u, v]`` over
    all frequencies ``(u, v)``, with ``K`` the kernel zero-padded to the grid. Strides are
    handled exactly by the polyphase decomposition (a stride-``s`` circular convolution on
    ``n`` is a stride-1 one on ``n / s`` with ``s^2`` times the input channels); dilation by
    placing the taps; groups make the operator block diagonal (max over groups).

    With ``circular=True`` (``padding_mode="circular"``, ``s`` dividing ``n``, output size
    ``n / s``) the value is exact. With zero padding the layer is a sub-block of the circular
    convolution on the zero-padded grid (``n + 2 p``, rounded up to a multiple of ``s``), so
    the value is an upper bound, tight up to boundary effects; Sedghi et al. and Jiang et al.
    use the circular value on the unpadded grid as the approximation.
    """
    out_ch, in_per_group = weight.shape[:2]
    grid, offsets = [], []
    for n, s, p in zip(input_size, stride, padding):
        if circular and n % s:
            raise ValueError(f"circular stride {s} does not divide input size {n}")
        grid.append(n // s if circular else math.ceil((n + 2 * p) / s))
        offsets.append(-p if circular else 0)
    kernel = weight.detach().reshape(groups, out_ch // groups, in_per_group, *weight.shape[2:])
    phased = kernel.new_zeros(*kernel.shape[:3], stride[0], stride[1], grid[0], grid[1])
    for t1 in range(weight.shape[2]):
        r1, q1 = _phase(t1 * dilation[0] + offsets[0], stride[0], grid[0])
        for t2 in range(weight.shape[3]):
            r2, q2 = _phase(t2 * dilation[1] + offsets[1], stride[1], grid[1])
            phased[:, :, :, r1, r2, q1, q2] += kernel[..., t1, t2]
    # Frequencies (u, v) and (-u, -v) give conjugate matrices: the half spectrum suffices.
    spectrum = torch.fft.rfft2(phased.to(torch.float64))
    blocks = spectrum.flatten(2, 4).permute(3, 4, 0, 1, 2)
    return float(torch.linalg.matrix_norm(blocks, ord=2).max())


def _phase(offset: int, stride: int, grid: int) -> tuple[int, int]:
    """Polyphase index ``r`` and grid position ``q`` of a tap at ``offset = s q + r``."""
    r = offset % stride
    return r, ((offset - r) // stride) % grid


def conv_layer_norm(
    layer: Layer, weight: Tensor | None = None, image_size: tuple[int, int] | None = None
) -> float:
    """Exact (circular) or upper-bound (zero padding) operator norm of a conv layer's map
    on its recorded input size, for its own weight or another kernel of the same shape.

    With ``image_size`` the kernel is taken instead as a stride-1 circular convolution on
    that grid, ignoring the layer's stride, padding, dilation and groups, as the reference's
    ``_spectral_norm_fft`` does at the image size for every layer
    (``data/generation/measures.py`` lines 214-225: ``np.fft.fft2(kernel, input_shape)``)."""
    conv = layer.module
    if image_size is not None:
        return conv_operator_norm(layer.weight if weight is None else weight, image_size)
    if layer.input_size is None:
        raise Undefined(f"no recorded input size for {layer.name}")
    if isinstance(conv.padding, str):
        padding = tuple((d * (k - 1)) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
    else:
        padding = tuple(conv.padding)
    return conv_operator_norm(
        layer.weight if weight is None else weight,
        layer.input_size,
        stride=conv.stride,
        padding=padding,
        dilation=conv.dilation,
        groups=conv.groups,
        circular=conv.padding_mode == "circular",
    )


@dataclass(frozen=True)
class GradStats:
    """Moments of per-example cross-entropy gradients over ``n`` examples (flattened over
    all parameters): the mean, the mean square (the empirical Fisher diagonal) and the
    diagonal of the Fisher of the model's predictive distribution,
    ``E_x sum_k p_k(x) g_k(x)^2`` with ``g_k`` the gradient for label ``k`` (for softmax
    cross-entropy this is the Gauss-Newton diagonal, the expected Hessian)."""

    mean: Tensor
    sq_mean: Tensor
    fisher_diag: Tensor
    n: int


def gradient_statistics(
    model: nn.Module, x: Tensor, y: Tensor, max_floats: int = 2**24
) -> GradStats:
    """Per-example gradients with ``torch.func.vmap`` for every label ``k`` (the true
    label's gradient is one of them), in chunks of at most ``max_floats`` floats."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss(p: Params, xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    per_example = vmap(grad(loss), in_dims=(None, 0, 0))

    def flat(g: Params) -> Tensor:
        return torch.cat([g[k].flatten(1) for k in params], dim=1)

    size = sum(v.numel() for v in params.values())
    chunk = max(1, max_floats // size)
    total = torch.zeros(size, device=x.device)
    total_sq = torch.zeros(size, device=x.device)
    fisher = torch.zeros(size, device=x.device)
    for start in range(0, len(x), chunk):
        xb, yb = x[start : start + chunk], y[start : start + chunk]
        probs = predict(model, xb).softmax(1)
        for k in range(probs.shape[1]):
            gk = flat(per_example(params, xb, torch.full_like(yb, k)))
            labelled = (yb == k).unsqueeze(1)
            total += torch.where(labelled, gk, 0.0).sum(0)
            total_sq += torch.where(labelled, gk.square(), 0.0).sum(0)
            fisher += (probs[:, k : k + 1] * gk.square()).sum(0)
    n = len(x)
    return GradStats(total / n, total_sq / n, fisher / n, n)


def trainable(model: nn.Module) -> Params:
    """The model's parameters, detached, by name."""
    return {k: v.detach() for k, v in model.named_parameters()}


def gaussian_draws(params: Params, draws: int, generator: torch.Generator) -> list[Params]:
    """``draws`` standard normal tensors per parameter (common random numbers: the same
    draws are rescaled at every step of a bisection, so its outcome is monotone in the
    scale for each draw)."""
    return [
        {
            k: torch.randn(v.shape, generator=generator, device=v.device, dtype=v.dtype)
            for k, v in params.items()
        }
        for _ in range(draws)
    ]


def bisect_scale(
    drop_at: Callable[[float], float],
    target: float,
    tolerance: float,
    depth: int,
    low: float = 0.0,
    high: float = 2.0,
) -> float:
    """The scale whose accuracy drop ``|drop_at(scale)|`` is about ``target``: ``depth``
    steps of a bisection on the arithmetic midpoint of ``[low, high]`` (``[0, 2]``), stopping
    early once within ``tolerance`` of the target, and returning the last midpoint tried, as
    the reference's ``_pacbayes_sigma`` (``data/generation/measures.py`` lines 60-101:
    ``search_depth=15``, ``accuracy_displacement=0.1``, ``displacement_tolerance=1e-2``,
    ``displacement = abs(mean accuracy - accuracy)``) and Jiang et al. (2020, App. C.6)."""
    mid = (low + high) / 2
    for _ in range(depth):
        mid = (low + high) / 2
        drop = abs(drop_at(mid))
        if abs(drop - target) < tolerance:
            break
        if drop > target:
            high = mid
        else:
            low = mid
    return mid


def worst_case_perturbation(
    model: nn.Module,
    params: Params,
    bound: Params,
    x: Tensor,
    y: Tensor,
    steps: int,
    generator: torch.Generator,
) -> Params:
    """An approximate maximiser of the training cross-entropy over the box
    ``|nu_i| <= bound_i``: projected sign-gradient ascent (Madry et al. 2018) from a uniform
    random start, step ``2.5 * bound / steps``."""
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    nu = {
        k: (2 * torch.rand(v.shape, generator=generator, device=v.device) - 1) * bound[k]
        for k, v in params.items()
    }
    for _ in range(steps):
        leaves = {k: v.requires_grad_(True) for k, v in nu.items()}
        shifted = {k: params[k] + leaves[k] for k in params}
        loss = F.cross_entropy(functional_call(model, (shifted, buffers), (x,)), y)
        grads = torch.autograd.grad(loss, list(leaves.values()))
        with torch.no_grad():
            nu = {
                k: torch.maximum(
                    torch.minimum(v + 2.5 * bound[k] / steps * g.sign(), bound[k]), -bound[k]
                )
                for (k, v), g in zip(leaves.items(), grads)
            }
    return {k: v.detach() for k, v in nu.items()}


def magnitude_aware_bound(
    reference_sq_norm: float, offsets: Tensor, scale: float, coefficient: float, eps: float, m: int
) -> float:
    """The magnitude-aware perturbation bound of Jiang et al. (2020, Sec. 8, App. C.7):
    ``1/4 sum_i log((eps^2 + coefficient ||r||^2 / omega) / (eps^2 + scale^2 offsets_i^2))
    + log(m / scale) + 10``, with ``||r||^2 = reference_sq_norm`` the squared norm of the
    weights' distance to the prior's centre (``w - w^0`` or ``w``), ``offsets = w - w^0``
    whatever the centre, and ``omega`` their number (:attr:`MeasureContext.omega`), as the
    reference's ``_pacbayes_mag_bound`` computes it (``data/generation/measures.py``:
    ``numerator`` from ``reference_vec``, ``denominator`` from ``dist_w_vec``, ``omega =
    num_params``). ``coefficient`` is ``sigma^2 + 1`` (PAC-Bayes) or
    ``alpha^2 + 4 log(2 omega / alpha)`` (sharpness). As in the reference, the confidence
    ``delta`` of ``log(m / delta)`` is the found scale itself."""
    omega = offsets.numel()
    numerator = eps**2 + coefficient * reference_sq_norm / omega
    denominator = eps**2 + scale**2 * offsets.double().square()
    return float(0.25 * torch.log(numerator / denominator).sum()) + math.log(m / scale) + 10


def flat(params: Params) -> Tensor:
    """All tensors of ``params`` concatenated in name order."""
    return torch.cat([params[k].flatten() for k in params])
