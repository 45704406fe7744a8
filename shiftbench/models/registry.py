"""The model registry and factory, as timm's ``create_model``: ``create_model("cnn", shape, k)``.

Each built-in family lives in its own module of this package and registers itself with
:func:`register`; any other name is looked up in timm (``resnet18``,
``vit_tiny_patch16_224``, ...; prefix ``timm:`` to be explicit).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ModelFactory = Callable[..., nn.Module]
MODELS: dict[str, ModelFactory] = {}
SIZE_PARAMETERS = frozenset({"depth", "width", "dropout"})
# Families sized by the objective's depth, width and dropout: those whose factory takes them.
SIZED_FAMILIES: set[str] = set()
# Families whose members can train as one vectorized ensemble (torch.func; no buffers), and
# those worth vectorizing on CPU too (a vectorized convolution is a grouped one, slower on
# CPU than K separate ones: perf/ensemble.py).
VECTORIZABLE: set[str] = set()
CPU_VECTORIZED: set[str] = set()


def register(
    name: str, *, vectorizable: bool = False, vectorize_on_cpu: bool = False
) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory ``f(input_shape, num_classes, **params) -> nn.Module``; one
    that takes ``depth``, ``width`` and ``dropout`` is a sized family. ``vectorizable``:
    the family can be trained as a vectorized ensemble; ``vectorize_on_cpu``: the sweep's
    ``ensemble: auto`` groups it on CPU workers too."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        MODELS[name] = factory
        if SIZE_PARAMETERS.issubset(inspect.signature(factory).parameters):
            SIZED_FAMILIES.add(name)
        if vectorizable:
            VECTORIZABLE.add(name)
        if vectorizable and vectorize_on_cpu:
            CPU_VECTORIZED.add(name)
        return factory

    return wrap


def vectorizable(name: str | None) -> bool:
    """Whether family ``name`` is registered ``vectorizable``."""
    return name in VECTORIZABLE


def vectorized_on_cpu(name: str | None) -> bool:
    """Whether family ``name`` is registered ``vectorize_on_cpu``."""
    return name in CPU_VECTORIZED


def check_size(depth: int, width: int, dropout: float) -> None:
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1, got depth={depth}, width={width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def timm_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    pretrained_file: str | None = None,
    pretrained_bn: str = "fuse",
    **kwargs: object,
) -> nn.Module:
    """A timm model for this input; ImageNet weights from ``pretrained_file`` when given
    (never downloaded: runs must work offline). The classifier head is always fresh.

    ``pretrained_bn`` says what becomes of the pretrained model's batch norms: ``fuse``
    (the default) folds each into the convolution before it, with its ImageNet running
    statistics, so the network has no batch norm left, as Naganuma et al.'s ResNet-50 does
    (Hiroki11x/Optimizer_Comparison_OOD, ``domainbed/networks.py``,
    ``remove_batch_norm_from_resnet``, lines 13-34, called in ``ResNet.__init__``);
    ``train`` keeps them as ordinary, trained batch norms."""
    import timm

    model = timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0], **kwargs
    )
    if pretrained_file:
        state = _load_weights(Path(pretrained_file))
        head = {k for k in state if k.startswith(model.default_cfg.get("classifier", "fc"))}
        missing, _ = model.load_state_dict(
            {k: v for k, v in state.items() if k not in head}, strict=False
        )
        if [k for k in missing if not k.startswith(model.default_cfg.get("classifier", "fc"))]:
            raise ValueError(f"{pretrained_file}: weights do not match timm model {name!r}")
        if pretrained_bn == "fuse":
            model = fuse_batch_norms(model, input_shape)
        elif pretrained_bn != "train":
            raise ValueError(f"pretrained_bn must be 'fuse' or 'train', got {pretrained_bn!r}")
    return model


def fuse_batch_norms(model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module:
    """``model`` with every batch norm folded into the convolution that feeds it, by the
    measures' own fold (:func:`shiftbench.measures.utils.fold_batchnorm`, which traces one
    forward pass of ``input_shape``): the eval-mode function is unchanged, and training no
    longer normalizes by batch. A batch norm fed by anything else is an error."""
    from shiftbench.measures.utils import fold_batchnorm

    fused = fold_batchnorm(model, torch.zeros(1, *input_shape)).train(model.training)
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"batch norms without a convolution just before them: {left}")
    return fused


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **params: object
) -> nn.Module:
    """Instantiate a registered family, or a timm model (``timm:`` prefix optional)."""
    if name in MODELS:
        return MODELS[name](tuple(input_shape), num_classes, **params)
    import timm

    timm_name = name.removeprefix("timm:")
    if not timm.is_model(timm_name):
        raise KeyError(
            f"unknown model {name!r}; built-in: {', '.join(sorted(MODELS))}, "
            "or any timm model name"
        )
    return timm_model(timm_name, tuple(input_shape), num_classes, **params)


def is_model(name: str) -> bool:
    """Whether ``create_model`` knows ``name`` (a built-in family or a timm model)."""
    if name in MODELS:
        return True
    import timm

    return timm.is_model(name.removeprefix("timm:"))


def available() -> list[str]:
    """Built-in family names (timm names are accepted too)."""
    return sorted(MODELS)
