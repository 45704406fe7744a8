"""Spectral measures: the FFT conv operator norm against the explicit convolution matrix,
and the spectral measures against direct SVDs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from shiftbench.measures import core as measures
from shiftbench.measures import utils as mu
from shiftbench.measures.config import MeasureConfig


def conv_matrix(conv: nn.Conv2d, channels: int, size: int) -> torch.Tensor:
    """The convolution (without bias) as an explicit matrix: its image of each basis input."""
    basis = torch.eye(channels * size * size).reshape(-1, channels, size, size)
    with torch.no_grad():
        return (conv(basis) - conv.bias.view(1, -1, 1, 1)).flatten(1).T


@pytest.mark.parametrize(
    ("stride", "dilation", "groups", "kernel"),
    [(1, 1, 1, 3), (2, 1, 1, 3), (1, 2, 2, 3), (2, 1, 2, 5), (1, 1, 1, 1)],
)
def test_fft_norm_is_exact_for_circular_convolution(stride, dilation, groups, kernel):
    torch.manual_seed(stride * 10 + dilation + groups + kernel)
    size, cin, cout = 8, 4, 6
    conv = nn.Conv2d(
        cin,
        cout,
        kernel,
        stride=stride,
        dilation=dilation,
        groups=groups,
        padding=dilation * (kernel - 1) // 2,
        padding_mode="circular",
    )
    explicit = torch.linalg.matrix_norm(conv_matrix(conv, cin, size).double(), ord=2)
    value = mu.conv_operator_norm(
        conv.weight,
        (size, size),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=groups,
        circular=True,
    )
    assert value == pytest.approx(float(explicit), rel=1e-6)


@pytest.mark.parametrize("stride", [1, 2])
def test_fft_norm_bounds_zero_padded_convolution(stride):
    torch.manual_seed(stride)
    size, cin, cout = 7, 3, 5
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
    explicit = float(torch.linalg.matrix_norm(conv_matrix(conv, cin, size).double(), ord=2))
    value = mu.conv_operator_norm(
        conv.weight, (size, size), stride=conv.stride, padding=conv.padding
    )
    assert explicit <= value * (1 + 1e-9)
    assert explicit > 0.5 * value  # tight up to boundary effects, not a loose bound


def cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, 8, 8, generator=gen)
    return x, cnn(0)(x).argmax(1).detach()


NAMES = [
    f"{name}{variant}"
    for variant in ("", "_fft")
    for name in (
        "log_prod_of_spec",
        "log_prod_of_spec_over_margin",
        "log_sum_of_spec",
        "log_sum_of_spec_over_margin",
        "fro_over_spec",
        "log_spec_init_main",
        "log_spec_orig_main",
        "dist_spec_init",
    )
]


def test_spectral_measures_match_direct_computation():
    model, init, (x, y) = cnn(0), cnn(1), data()
    v = measures.compute(model, (x, y), init, names=NAMES, config=MeasureConfig(fft_input="layer"))
    sizes = [8, 8, None]
    mats, exact, dist_exact, fro, dist_fro = [], [], [], [], []
    for layer, layer0, size in zip(
        [model[0], model[2], model[5]], [init[0], init[2], init[5]], sizes
    ):
        w, w0 = layer.weight.detach(), layer0.weight.detach()
        fro.append(float((w**2).sum()))
        dist_fro.append(float(((w - w0) ** 2).sum()))
        mats.append(float(torch.linalg.matrix_norm(w.reshape(len(w), -1), ord=2)) ** 2)
        if size is None:
            exact.append(mats[-1])
            dist_exact.append(float(torch.linalg.matrix_norm(w - w0, ord=2)) ** 2)
            continue
        exact.append(
            float(torch.linalg.matrix_norm(conv_matrix(layer, w.shape[1], size), ord=2)) ** 2
        )
        delta = nn.Conv2d(
            w.shape[1], len(w), 3, stride=layer.stride, padding=1, padding_mode="circular"
        )
        with torch.no_grad():
            delta.weight.copy_(w - w0)
        dist_exact.append(
            float(torch.linalg.matrix_norm(conv_matrix(delta, w.shape[1], size), ord=2)) ** 2
        )
    # gamma: the 10th-percentile training margin, from the logits (Jiang et al.)
    logits = model(x).detach()
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], -math.inf).max(1).values
    gamma = float(torch.sort(true - others).values[math.ceil(0.1 * len(x)) - 1])
    margin_term = 2 * math.log(gamma)
    assert v["log_prod_of_spec"] == pytest.approx(sum(map(math.log, mats)), rel=1e-5)
    assert v["log_prod_of_spec_fft"] == pytest.approx(sum(map(math.log, exact)), rel=1e-4)
    assert v["fro_over_spec"] == pytest.approx(sum(f / s for f, s in zip(fro, mats)), rel=1e-4)
    assert v["fro_over_spec_fft"] == pytest.approx(
        sum(f / s for f, s in zip(fro, exact)), rel=1e-4
    )
    assert v["dist_spec_init_fft"] == pytest.approx(sum(dist_exact), rel=1e-4)
    for suffix, spec in (("", mats), ("_fft", exact)):
        log_prod = sum(map(math.log, spec))
        assert v[f"log_prod_of_spec_over_margin{suffix}"] == pytest.approx(
            log_prod - margin_term, rel=1e-4
        )
        assert v[f"log_sum_of_spec{suffix}"] == pytest.approx(math.log(3) + log_prod / 3, rel=1e-4)
        assert v[f"log_sum_of_spec_over_margin{suffix}"] == pytest.approx(
            math.log(3) + (log_prod - margin_term) / 3, rel=1e-4
        )
        assert v[f"log_spec_init_main{suffix}"] == pytest.approx(
            log_prod - margin_term + math.log(sum(f / s for f, s in zip(dist_fro, spec))),
            rel=1e-4,
        )
        assert v[f"log_spec_orig_main{suffix}"] == pytest.approx(
            log_prod - margin_term + math.log(sum(f / s for f, s in zip(fro, spec))), rel=1e-4
        )
    # the plain variant: each layer's weight reshaped to a matrix (the reference's)
    dist_mats = [
        float(torch.linalg.matrix_norm((a.weight - b.weight).detach().flatten(1), ord=2)) ** 2
        for a, b in zip([model[0], model[2], model[5]], [init[0], init[2], init[5]])
    ]
    assert v["dist_spec_init"] == pytest.approx(sum(dist_mats), rel=1e-4)


def test_fft_norms_default_to_the_references_stride_1_map_at_the_image_size():
    # the reference's _spectral_norm_fft(kernel, input_shape) with input_shape the image's
    # (H, W) for every layer: the kernel as a stride-1 circular convolution on the 8 x 8
    # image grid, whatever the layer's stride (the second conv has stride 2). By hand: the
    # explicit matrix of that convolution.
    model, init, (x, y) = cnn(0), cnn(1), data()
    names = ["log_prod_of_spec_fft", "dist_spec_init_fft", "fro_over_spec_fft"]
    v = measures.compute(model, (x, y), init, names=names)
    spec, dist_spec, fro = [], [], []
    for layer, layer0 in zip([model[0], model[2], model[5]], [init[0], init[2], init[5]]):
        w, w0 = layer.weight.detach(), layer0.weight.detach()
        fro.append(float((w**2).sum()))
        if w.dim() == 2:
            spec.append(float(torch.linalg.matrix_norm(w, ord=2)) ** 2)
            dist_spec.append(float(torch.linalg.matrix_norm(w - w0, ord=2)) ** 2)
            continue
        for kernel, out in ((w, spec), (w - w0, dist_spec)):
            stride_1 = nn.Conv2d(w.shape[1], len(w), 3, padding=1, padding_mode="circular")
            with torch.no_grad():
                stride_1.weight.copy_(kernel)
            matrix = conv_matrix(stride_1, w.shape[1], 8).double()
            out.append(float(torch.linalg.matrix_norm(matrix, ord=2)) ** 2)
    assert v["log_prod_of_spec_fft"] == pytest.approx(sum(map(math.log, spec)), rel=1e-5)
    assert v["dist_spec_init_fft"] == pytest.approx(sum(dist_spec), rel=1e-5)
    assert v["fro_over_spec_fft"] == pytest.approx(sum(f / s for f, s in zip(fro, spec)), rel=1e-5)


def test_product_of_spectral_norms_is_invariant_to_layer_rescaling():
    model, (x, y) = cnn(0), data()
    scaled = cnn(0)
    with torch.no_grad():
        scaled[0].weight.mul_(3.0)
        scaled[0].bias.mul_(3.0)
        scaled[2].weight.div_(3.0)
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-5, atol=1e-5)
    names = ["log_prod_of_spec_fft", "log_prod_of_spec", "fro_over_spec_fft"]
    a, b = (
        measures.compute(model, (x, y), names=names),
        measures.compute(scaled, (x, y), names=names),
    )
    for name in names:
        assert b[name] == pytest.approx(a[name], rel=1e-4), name


def test_fft_measures_follow_the_recorded_input_size():
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular")
    layer_small = mu.Layer("c", conv, (4, 4))
    layer_large = mu.Layer("c", conv, (16, 16))
    small = mu.conv_layer_norm(layer_small)
    large = mu.conv_layer_norm(layer_large)
    # the 16-grid contains the 4-grid's frequencies: the norm can only grow
    assert large >= small * (1 - 1e-9)
    assert large > small * 1.001  # a random kernel peaks between the 4-grid's frequencies
