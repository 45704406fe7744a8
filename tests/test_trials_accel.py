"""The fast training path: settings resolve per device, channels-last and compiling change
no numbers, bf16 autocast is really on and stays close to fp32, and bad settings are one
located line in a study file."""

import copy
import math
import platform
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from shiftbench.models.registry import create_model
from shiftbench.plugins import registry
from shiftbench.spec.study import StudyError, load_study, parse_study
from shiftbench.store import ledger as store
from shiftbench.sweep.driver import run_study
from shiftbench.trials import allocator
from shiftbench.trials.accel import AUTO, PLAIN, Accel, can_flush_denormal, denormals_flushed
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

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


def test_auto_is_the_plain_path_on_the_cpu_flushing_denormals_and_keeping_memory():
    cpu_modes = {"flush_denormal": can_flush_denormal(), "retain_memory": allocator.can_retain()}
    assert AUTO.resolve(CPU) == replace(PLAIN, **cpu_modes)
    assert AUTO.resolve(torch.device("cuda")).retain_memory is False
    assert can_flush_denormal() or platform.machine() not in ("x86_64", "AMD64")
    explicit = Accel("bf16", True, False, False, False)
    assert explicit.resolve(CPU) == explicit
    assert PLAIN.columns() == {
        "accel.precision": "fp32",
        "accel.channels_last": False,
        "accel.compile": "false",
        "accel.flush_denormal": False,
        "accel.retain_memory": False,
    }


@pytest.mark.skipif(not can_flush_denormal(), reason="this CPU cannot flush denormals")
def test_flushing_is_in_effect_inside_the_context_and_undone_after():
    denormal = torch.tensor(2.0**-130)
    assert not denormals_flushed() and denormal.item() > 0
    with Accel(flush_denormal=True).denormals():
        assert denormals_flushed() and (denormal * 1.0).item() == 0.0
        with PLAIN.denormals():
            assert not denormals_flushed()
        assert denormals_flushed()
    assert not denormals_flushed() and (denormal * 1.0).item() > 0


@pytest.mark.skipif(not can_flush_denormal(), reason="this CPU cannot flush denormals")
def test_an_in_process_trial_flushes_denormals_by_default_on_the_cpu():
    """RMSProp with ``eps`` a float32 denormal: where a gradient entry is exactly 0 (weights
    of the images' always-black pixels), ``grad / (sqrt(0) + eps)`` is 0 / 1e-40 = 0, unless
    ``eps`` is flushed to zero: then it is 0 / 0 = NaN and the trial diverges."""
    t = trial(model="mlp", solver="rmsprop", eps=1e-40)
    flushed = TrialRunner({}, device="cpu").run(t, "accel")
    assert flushed.status == "diverged" and math.isnan(flushed.rows[-1]["train_loss"])
    assert {row["accel.flush_denormal"] for row in flushed.rows} == {True}
    assert not denormals_flushed()  # the caller's thread is as it was
    plain = TrialRunner({}, device="cpu", accel=PLAIN).run(t, "accel")
    assert plain.status == "done", plain.error
    assert {row["accel.flush_denormal"] for row in plain.rows} == {False}


@pytest.mark.ray
@pytest.mark.skipif(not can_flush_denormal(), reason="this CPU cannot flush denormals")
def test_a_ray_worker_flushes_denormals_by_default_on_the_cpu(
    ray_cluster, make_study, store_dir, tmp_path
):
    """The trial of the test above, run by a Ray worker: diverged, as only flushing makes it."""
    spec = {"solvers": {"rmsprop": {"eps": [1e-40]}}, "search": {"kind": "grid"}, "seeds": [0]}
    flushed = load_study(make_study(**spec))
    assert run_study(flushed, store_dir, workers=1, progress=False).counts == {"diverged": 1}
    rows = store.read(store_dir, flushed.name)
    assert set(rows["accel.flush_denormal"]) == {True} and rows["train_loss"].isna().any()
    assert set(rows["accel.retain_memory"]) == {allocator.can_retain()}
    plain = load_study(make_study(**spec, accel={"flush_denormal": False}))
    counts = run_study(plain, tmp_path / "plain", workers=1, progress=False).counts
    assert counts == {"done": 1}
    assert set(store.read(tmp_path / "plain", plain.name)["accel.flush_denormal"]) == {False}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
        ({"channels_last": "yes"}, "channels_last must be auto, true or false"),
        ({"compile": "no_such_backend"}, "unknown torch.compile backend 'no_such_backend'"),
        ({"compile": ""}, "compile must be true, false or a torch.compile backend name"),
        ({"flush_denormal": "on"}, "flush_denormal must be auto, true or false"),
        ({"retain_memory": 1}, "retain_memory must be auto, true or false"),
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
    accel = {
        "precision": "bf16",
        "channels_last": True,
        "compile": "eager",
        "flush_denormal": False,
        "retain_memory": False,
    }
    raw = {**VALID, "accel": accel}
    parsed = parse_study(raw, tmp_path / "s.yml").accel
    assert parsed == Accel("bf16", True, "eager", False, False)


@pytest.mark.parametrize(
    "accel, key",
    [
        ({"precision": "fp8"}, "accel.precision"),
        ({"channels_last": 2}, "accel.channels_last"),
        ({"compile": "nope"}, "accel.compile"),
        ({"flush_denormal": 1}, "accel.flush_denormal"),
        ({"retain_memory": "yes"}, "accel.retain_memory"),
        ({"amp": True}, "accel.amp"),
        ([1], "accel"),
    ],
)
def test_bad_accel_is_one_located_line(tmp_path, accel, key):
    with pytest.raises(StudyError) as info:
        parse_study({**VALID, "accel": accel}, tmp_path / "s.yml")
    assert info.value.key == key and "\n" not in str(info.value)
