"""Environments and their splits (shiftbench.data.environments): the three disjoint parts of
a training environment (trained on, examples the measures may use, the IID test set)."""

from __future__ import annotations

import pytest
import torch

from shiftbench.data.environments import DomainData, Environment, split_holdout


def indexed(name: str, n: int) -> Environment:
    """An environment whose every input is its own example index."""
    return Environment(name, torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n))


def ids(env: Environment) -> set[int]:
    return {int(v) for v in env.x[:, 0]}


def test_train_measure_and_iid_test_parts_are_disjoint_and_cover_the_environment():
    data = DomainData(
        "d", [indexed("clean", 200), indexed("shifted", 50)], 1, 2,
        holdout_fraction=0.2, train_envs=(0,), measure_fraction=0.25,
    )  # fmt: skip
    (inn, out), (shift_in, shift_out) = data.splits()
    (measure,) = data.measure_sets()
    train, heldout, test = ids(inn), ids(measure), ids(out)
    assert (len(train), len(heldout), len(test)) == (110, 50, 40)
    assert not train & heldout and not train & test and not heldout & test
    assert train | heldout | test == set(range(200))
    # the IID test set is the same as without a measure part (id_acc is unchanged)
    assert test == ids(split_holdout(indexed("clean", 200), 0.2, 0)[1])
    # an environment not trained on gives nothing to the measures
    assert ids(shift_in) | ids(shift_out) == set(range(50))


def test_no_measure_part_by_default_and_bad_fractions_are_rejected():
    data = DomainData("d", [indexed("a", 20), indexed("b", 20)], 1, 2)
    assert data.measure_sets() == []
    assert [ids(p) for p in data.splits()[0]] == [
        ids(p) for p in split_holdout(indexed("a", 20), 0.2, 0)
    ]
    with pytest.raises(ValueError, match="measure_fraction must be in"):
        DomainData("d", [indexed("a", 20), indexed("b", 20)], 1, 2, measure_fraction=0.8)


def test_take_is_indexing_and_keeps_the_memory_format():
    """The sampler's draw: the values of ``x[idx], y[idx]`` (repeats included); a contiguous
    draw comes back contiguous, and a channels-last input stays channels-last, as indexing
    leaves it (the convolutions then see what they saw)."""
    images = torch.randn(9, 3, 4, 5)
    env = Environment("e", images, torch.arange(9) % 4)
    idx = torch.tensor([8, 0, 0, 5, 2])
    x, y = env.take(idx)
    assert torch.equal(x, images[idx]) and x.is_contiguous()
    assert y.tolist() == [0, 0, 0, 1, 2]
    last = Environment("e", images.to(memory_format=torch.channels_last), env.y)
    x, _ = last.take(idx)
    assert torch.equal(x, images[idx]) and x.is_contiguous(memory_format=torch.channels_last)
    tokens = Environment("t", torch.arange(12).view(4, 3), torch.arange(4))
    assert tokens.take(torch.tensor([3, 1]))[0].tolist() == [[9, 10, 11], [3, 4, 5]]
