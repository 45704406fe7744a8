"""The offline char_text and shifted_digits datasets, end to end through the objective."""

import math

import pytest
import torch

from shiftbench.data.digits import digit_images, parse_shifts, shifted_digit_environments
from shiftbench.data.text import text_blocks
from shiftbench.plugins.registry import dataset_class, defaults, objective_class, solver_class
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_text_blocks_targets_are_the_next_characters():
    tokens = torch.arange(23)
    env = text_blocks("t", tokens, 5)
    assert env.x.shape == env.y.shape == (4, 5)
    assert torch.equal(env.y, env.x + 1)
    with pytest.raises(ValueError):
        text_blocks("t", torch.arange(6), 5)


def test_char_text_trains_a_char_gpt_through_the_objective():
    params = {**defaults(dataset_class("char_text")), "max_chars": 20_000, "block_size": 16}
    data = dataset_class("char_text").get_instance(**params).get_data()["data"]
    vocab = data.num_classes
    assert data.input_shape == (16,) and data.training_indices == (0,)
    objective = {
        **defaults(objective_class()),
        "steps": 10,
        "eval_every": 5,
        "model": "char_gpt",
        "depth": 1,
        "width": 32,
    }
    objective.pop("seed")
    solver = {**defaults(solver_class("adam")), "lr": 3e-3, "batch_size": 8}
    trial = Trial.make("char_text", params, objective, "adam", solver, 0)
    outcome = TrialRunner({}).run(trial, "t")
    assert outcome.status == "done", outcome.error
    first, last = outcome.rows[0], outcome.rows[-1]
    assert first["train_loss"] == pytest.approx(math.log(vocab), rel=0.1)  # uniform at init
    assert last["train_loss"] < first["train_loss"]
    assert 0.0 <= last["ood_acc"] <= 1.0


def test_shifted_digits_train_on_clean_and_test_every_shift_on_the_same_images():
    envs = shifted_digit_environments("rotate-0,color,contrast-3")
    _, labels = digit_images()
    assert [e.name for e in envs] == ["clean", "rotate-0", "color", "contrast-3"]
    assert len(envs[0]) + len(envs[1]) == len(labels)
    assert all(torch.equal(envs[1].y, e.y) for e in envs[2:])
    assert torch.allclose(envs[1].x[:, 0], envs[1].x[:, 2])  # grey: all channels equal
    assert torch.equal(envs[2].x[:, 0], envs[1].x[:, 0]) and envs[2].x[:, 1:].abs().sum() == 0
    assert not torch.allclose(envs[3].x, envs[1].x)


@pytest.mark.parametrize("spec", ["", "blur-3", "contrast-9", "rotate-x"])
def test_bad_shift_specs_are_clear_errors(spec):
    with pytest.raises(ValueError):
        parse_shifts(spec)


def test_char_text_reads_a_hugging_face_copy_of_openwebtext(tmp_path):
    """``path: hf:<folder>`` loads a saved Hugging Face text data set (OpenWebText's
    format: one ``text`` column of documents), offline, into the same environments."""
    datasets = pytest.importorskip("datasets")
    documents = [f"document {i}: " + "the quick brown fox " * 20 for i in range(30)]
    datasets.Dataset.from_dict({"text": documents}).save_to_disk(str(tmp_path / "owt"))
    params = {
        **defaults(dataset_class("char_text")),
        "path": f"hf:{tmp_path / 'owt'}",
        "block_size": 16,
    }
    data = dataset_class("char_text").get_instance(**params).get_data()["data"]
    text = "\n\n".join(documents)
    assert data.num_classes == len(set(text))
    blocks = sum(len(env) for env in data.environments)
    tail = int(len(text) * 0.1)
    head = len(text) - tail
    assert blocks == (head - 1) // 16 + (tail - 1) // 16
