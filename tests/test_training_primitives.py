"""The hot loop's pieces: the seeded per-environment sampler, batched evaluation (equal to a
whole-environment cross-entropy, in eval mode, mode restored) and seeding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from shiftbench.data.digits import rotated_digit_environments
from shiftbench.data.environments import Environment
from shiftbench.training.primitives import (
    EnvSampler,
    evaluate,
    evaluate_all,
    flat_predictions,
    lr_factor,
    pick_device,
    seed_everything,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def index_env(n: int, name: str, offset: int = 0) -> Environment:
    """An environment whose input is its own index, so draws can be read back."""
    x = torch.arange(offset, offset + n, dtype=torch.float32).unsqueeze(1)
    return Environment(name, x, (torch.arange(n) % 3).long())


def drawn_indices(sampler, steps):
    out = [[] for _ in sampler.envs]
    for _ in range(steps):
        for i, (x, _) in enumerate(next(sampler)):
            out[i].append(x[:, 0].long())
    return [torch.cat(parts) for parts in out]


def test_sampler_draws_batch_size_examples_of_each_env_with_their_labels():
    envs = [index_env(7, "a"), index_env(11, "b", offset=100)]
    batches = next(EnvSampler(envs, batch_size=5, seed=0))
    assert len(batches) == 2
    for env, (x, y) in zip(envs, batches):
        assert x.shape == (5, 1) and y.shape == (5,) and y.dtype == torch.int64
        idx = x[:, 0].long() - int(env.x[0, 0])
        assert idx.min() >= 0 and idx.max() < len(env)
        assert torch.equal(y, env.y[idx])


def test_sampler_draws_what_indexing_with_its_seeded_generator_draws():
    """Each step draws every environment's indices in turn from one generator seeded by the
    trial and gathers ``x[idx], y[idx]``: the exact stream of the loop before ``take``, so
    trials keep their numbers."""
    envs = [
        Environment("a", torch.randn(13, 2, 3, 3), torch.arange(13) % 2),
        Environment("b", torch.randn(7, 2, 3, 3), torch.arange(7) % 2),
    ]
    sampler = EnvSampler(envs, batch_size=6, seed=2)
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        for env, (x, y) in zip(envs, next(sampler), strict=True):
            idx = torch.randint(len(env), (6,), generator=generator)
            assert torch.equal(x, env.x[idx]) and torch.equal(y, env.y[idx])


def test_sampler_is_reproducible_from_the_seed_and_differs_across_seeds():
    envs = [index_env(50, "a"), index_env(30, "b")]
    first = drawn_indices(EnvSampler(envs, 8, seed=3), 10)
    again = drawn_indices(EnvSampler(envs, 8, seed=3), 10)
    other = drawn_indices(EnvSampler(envs, 8, seed=4), 10)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    # the global torch RNG plays no part
    torch.manual_seed(123)
    noisy = drawn_indices(EnvSampler(envs, 8, seed=3), 10)
    assert all(torch.equal(a, b) for a, b in zip(first, noisy))


def test_sampler_is_uniform_with_replacement():
    env = index_env(10, "a")
    (idx,) = drawn_indices(EnvSampler([env], batch_size=20, seed=0), 100)
    counts = np.bincount(idx.numpy(), minlength=10)
    assert counts.sum() == 2000 and (counts > 0).all()
    assert stats.chisquare(counts).pvalue > 1e-3
    # with replacement: a batch larger than the environment is fine
    ((x, _),) = next(EnvSampler([index_env(3, "tiny")], batch_size=10, seed=0))
    assert len(x) == 10


def test_sampler_epoch_size_and_bad_batch():
    envs = [index_env(7, "a"), index_env(11, "b")]
    assert EnvSampler(envs, 4, seed=0).examples_per_epoch == 18
    with pytest.raises(ValueError):
        EnvSampler(envs, 0, seed=0)


@pytest.fixture(scope="module")
def env():
    return rotated_digit_environments()[1]


def dropout_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10)
    )


@pytest.mark.parametrize("batch_size", [2048, 37])
def test_evaluate_equals_whole_env_cross_entropy(env, batch_size):
    model = dropout_model()
    model.eval()
    with torch.no_grad():
        logits = model(env.x)
    expected_loss = F.cross_entropy(logits, env.y).item()
    expected_acc = (logits.argmax(1) == env.y).double().mean().item()
    model.train()
    ev = evaluate(model, env, batch_size=batch_size)
    assert ev.n == len(env) == 300
    assert ev.loss == pytest.approx(expected_loss, rel=1e-5)
    assert ev.acc == pytest.approx(expected_acc, abs=1e-6)
    # independently: the accuracy is a count over n
    assert round(ev.acc * ev.n) == pytest.approx(ev.acc * ev.n, abs=1e-3)


def test_evaluate_uses_eval_mode_and_restores_the_mode(env):
    model = dropout_model()
    model.train()
    a, b = evaluate(model, env), evaluate(model, env)
    assert model.training  # restored
    assert a == b  # dropout was off (train-mode dropout would change the loss)
    model.eval()
    evaluate(model, env)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_all_is_evaluate_on_each_environment_with_one_mode_switch(env):
    """Several environments at one checkpoint: the same numbers as one ``evaluate`` each,
    across batches that split an environment, in eval mode throughout, the mode restored
    (also when a forward pass fails)."""
    model, other = dropout_model(), rotated_digit_environments()[2]
    model.train()
    modes = []
    model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    together = evaluate_all(model, [env, other], batch_size=128)
    assert together == [evaluate(model, env, 128), evaluate(model, other, 128)]
    assert model.training and not any(modes)
    broken = Environment("broken", env.x[..., :4], env.y)  # the wrong number of features
    with pytest.raises(RuntimeError):
        evaluate_all(model, [env, broken])
    assert model.training


def test_flat_predictions_keeps_classification_tensors_and_flattens_sequences():
    logits, y = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    flat_logits, flat_y = flat_predictions(logits, y)
    assert flat_logits is logits and flat_y is y  # no view, no extra autograd node
    tokens, targets = torch.randn(2, 4, 3), torch.randint(3, (2, 4))
    flat_logits, flat_y = flat_predictions(tokens, targets)
    assert flat_logits.shape == (8, 3) and flat_y.shape == (8,)
    assert torch.equal(flat_logits[5], tokens[1, 1]) and flat_y[5] == targets[1, 1]


def test_seed_everything_makes_torch_and_numpy_reproducible():
    seed_everything(5)
    first = (torch.rand(3), np.random.rand(3))
    seed_everything(5)
    second = (torch.rand(3), np.random.rand(3))
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    seed_everything(2**40 + 5)  # larger than NumPy's 32-bit seeds
    assert torch.initial_seed() == 2**40 + 5


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected


def test_lr_factor_is_nanogpts_warmup_and_cosine_by_hand():
    # 10 steps, 2 of warm-up: 1/3, 2/3, then cos from 1 (step 2) to 0.1 (step 9)
    assert lr_factor(0, 10, 2, "cosine") == pytest.approx(1 / 3)
    assert lr_factor(1, 10, 2, "cosine") == pytest.approx(2 / 3)
    assert lr_factor(2, 10, 2, "cosine") == pytest.approx(1.0)
    # step 5 of 11 with 2 of warm-up: 3/8 of the way down
    assert lr_factor(5, 11, 2, "cosine") == pytest.approx(
        0.1 + 0.5 * 0.9 * (1 + np.cos(np.pi * 3 / 8))
    )
    assert lr_factor(9, 10, 2, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 2, "cosine", min_ratio=0.0) == pytest.approx(0.0, abs=1e-12)
    assert [lr_factor(s, 10, 3) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    assert lr_factor(7, 10) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(5, 10, 0, "linear")
