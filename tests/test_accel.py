"""The fast training path: settings resolve per device, channels-last and compiling change
no numbers, bf16 autocast is really on and stays close to fp32, and bad settings are one
located line in a study file."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from shiftbench import registry
from shiftbench.accel import AUTO, PLAIN, Accel
from shiftbench.models import create_model
from shiftbench.runner import TrialRunner
from shiftbench.study import StudyError, parse_study
from shiftbench.trial import Trial

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trial(model="cnn", solver="adam", **solver_params) -> Trial:
    objective = {
        **{k: v for k, v in registry.defaults(registry.objective_class()).items() if k != "seed"},
        "steps": 30,
        "eval_every": 10,
        "model": model,
        "width": 8,
    }
    cls = registry.solver_class(solver)
    dataset = registry.defaults(registry.dataset_class("colored_digits"))
    params = {**registry.defaults(cls), "batch_size": 16, **solver_params}
    return Trial.make("colored_digits", dataset, objective, solver, params, 0)


def curve(accel: Accel, t: Trial) -> tuple[np.ndarray, list[dict]]:
    outcome = TrialRunner({}, device="cpu", accel=accel).run(t, "accel")
    assert outcome.status == "done", outcome.error
    columns = ["train_loss", "id_acc", "ood_acc"]
    return np.array([[row[c] for c in columns] for row in outcome.rows]), outcome.rows


def test_auto_is_the_plain_path_on_the_cpu():
    assert AUTO.resolve(CPU) == PLAIN
    assert Accel("bf16", True, False).resolve(CPU) == Accel("bf16", True, False)
    assert PLAIN.columns() == {
        "accel.precision": "fp32",
        "accel.channels_last": False,
        "accel.compile": "false",
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
        ({"channels_last": "yes"}, "channels_last must be auto, true or false"),
        ({"compile": "no_such_backend"}, "unknown torch.compile backend 'no_such_backend'"),
        ({"compile": ""}, "compile must be true, false or a torch.compile backend name"),
    ],
)
def test_impossible_settings_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Accel(**kwargs)


def test_prepare_puts_conv_models_in_channels_last_and_leaves_others():
    conv = create_model("cnn", (2, 8, 8), 3, width=4)
    Accel("fp32", True, False).prepare(conv)
    kernel = conv[0].weight
    assert kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()
    mlp = create_model("mlp", (2, 8, 8), 3, width=4)
    assert Accel("fp32", True, False).prepare(mlp) is mlp
    assert all(p.is_contiguous() for p in mlp.parameters())


def test_bf16_autocast_is_in_effect_inside_the_context():
    layer = nn.Linear(4, 2)
    with Accel("bf16", False, False).autocast(CPU):
        assert layer(torch.randn(3, 4)).dtype == torch.bfloat16
    with PLAIN.autocast(CPU):
        assert layer(torch.randn(3, 4)).dtype == torch.float32


def test_channels_last_changes_no_number():
    """Memory format is layout, not arithmetic: the same trial in both formats agrees to
    float tolerance at every checkpoint (also under a rotated optimizer)."""
    for t in (trial(), trial(rotation="output")):
        plain, _ = curve(PLAIN, t)
        channels_last, rows = curve(Accel("fp32", True, False), t)
        assert rows[0]["accel.channels_last"] is True
        np.testing.assert_allclose(channels_last, plain, rtol=1e-4, atol=1e-5)


def test_compiled_model_trains_to_the_same_numbers():
    """torch.compile (dynamo with the eager backend: no C compiler needed) traces the same
    operations, so the curve matches the uncompiled run."""
    t = trial(model="mlp", solver="sgd", lr=0.1)
    plain, _ = curve(PLAIN, t)
    compiled, rows = curve(Accel("fp32", False, "eager"), t)
    assert rows[-1]["accel.compile"] == "eager"
    np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-6)


def test_bf16_training_is_close_to_fp32_and_recorded():
    t = trial(model="mlp", solver="sgd", lr=0.1)
    plain, _ = curve(PLAIN, t)
    bf16, rows = curve(Accel("bf16", False, False), t)
    assert {row["accel.precision"] for row in rows} == {"bf16"}
    assert not np.array_equal(bf16[:, 0], plain[:, 0])  # really a different arithmetic
    np.testing.assert_allclose(bf16[:, 0], plain[:, 0], rtol=0.05)
    assert bf16[-1, 0] < bf16[0, 0]


VALID = {
    "name": "accel",
    "datasets": {"colored_digits": {}},
    "solvers": {"sgd": {}},
}


def test_study_accel_key_defaults_to_auto_and_parses(tmp_path):
    assert parse_study(copy.deepcopy(VALID), tmp_path / "s.yml").accel == AUTO
    raw = {**VALID, "accel": {"precision": "bf16", "channels_last": True, "compile": "eager"}}
    assert parse_study(raw, tmp_path / "s.yml").accel == Accel("bf16", True, "eager")


@pytest.mark.parametrize(
    "accel, key",
    [
        ({"precision": "fp8"}, "accel.precision"),
        ({"channels_last": 2}, "accel.channels_last"),
        ({"compile": "nope"}, "accel.compile"),
        ({"amp": True}, "accel.amp"),
        ([1], "accel"),
    ],
)
def test_bad_accel_is_one_located_line(tmp_path, accel, key):
    with pytest.raises(StudyError) as info:
        parse_study({**VALID, "accel": accel}, tmp_path / "s.yml")
    assert info.value.key == key and "\n" not in str(info.value)
