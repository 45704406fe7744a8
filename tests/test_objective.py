"""The Benchopt objective: DomainBed's holdout split and ID / OOD / oracle metrics, checked
against an independent computation with a fixed model, and its parameter checks."""

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from shiftbench.plugins import registry
from shiftbench.training.algorithms import ERM, IRM

OBJ = {"steps": 20, "eval_every": 10, "model": "mlp", "width": 16, "depth": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_objective(dataset="colored_digits", dataset_params=None, **params):
    objective = registry.objective_class().get_instance(**{**OBJ, **params})
    objective.device = "cpu"
    data = registry.dataset_class(dataset).get_instance(**(dataset_params or {})).get_data()
    objective.set_data(**data)
    return objective


def by_hand_splits(envs, fraction, trial_seed):
    """DomainBed's train.py, written out: ``misc.split_dataset(env, int(len(env) * fraction),
    misc.seed_hash(trial_seed, i))`` shuffles a list of keys, the first part is out."""
    splits = []
    for i, env in enumerate(envs):
        seed = int(hashlib.md5(str((trial_seed, i)).encode("utf-8")).hexdigest(), 16) % 2**31
        keys = list(range(len(env)))
        np.random.RandomState(seed).shuffle(keys)
        n_out = int(len(env) * fraction)
        splits.append((np.array(keys[n_out:]), np.array(keys[:n_out])))
    return splits


def acc_loss(model, x, y):
    with torch.no_grad():
        logits = model.eval()(x)
    return (logits.argmax(1) == y).double().mean().item(), F.cross_entropy(
        logits, y, reduction="sum"
    ).item()


@pytest.mark.parametrize(
    "dataset, dataset_params",
    [
        ("colored_digits", {"test_env": 2}),
        (
            "colored_digits",
            {"test_env": 0, "holdout_fraction": 0.3, "split_seed": 4, "fixed_data": True},
        ),
        ("rotated_digits", {"test_env": 0}),
    ],
)
def test_metrics_match_an_independent_computation(dataset, dataset_params):
    objective = make_objective(dataset, dataset_params, seed=3)
    data = objective.data
    test = data.test_env
    torch.manual_seed(11)  # a fixed model that is not the objective's own init
    model = objective.build_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()
    metrics = objective.evaluate_result(model)

    envs = data.environments
    fraction = dataset_params.get("holdout_fraction", 0.2)
    splits = by_hand_splits(envs, fraction, dataset_params.get("split_seed", 0))
    id_accs, pooled_x, pooled_y = [], [], []
    for i, (env, (inn, out)) in enumerate(zip(envs, splits)):
        in_acc, _ = acc_loss(model, env.x[inn], env.y[inn])
        out_acc, _ = acc_loss(model, env.x[out], env.y[out])
        assert metrics[f"env{i}_in_acc"] == pytest.approx(in_acc, abs=1e-6)
        assert metrics[f"env{i}_out_acc"] == pytest.approx(out_acc, abs=1e-6)
        if i == test:
            whole_acc, whole_loss = acc_loss(model, env.x, env.y)
            assert metrics["ood_acc"] == pytest.approx(whole_acc, abs=1e-6)
            assert metrics["ood_loss"] == pytest.approx(whole_loss / len(env), rel=1e-5)
            assert metrics["oracle_acc"] == pytest.approx(out_acc, abs=1e-6)
            # DomainBed's reported test accuracy, and Naganuma et al.'s avg_test_acc
            assert metrics["test_in_acc"] == pytest.approx(in_acc, abs=1e-6)
            naganuma = (1 - fraction) * in_acc + fraction * out_acc
            assert metrics["avg_test_acc"] == pytest.approx(naganuma, abs=1e-6)
        else:
            id_accs.append(out_acc)
            pooled_x.append(env.x[inn])
            pooled_y.append(env.y[inn])
    x, y = torch.cat(pooled_x), torch.cat(pooled_y)
    train_acc, train_loss_sum = acc_loss(model, x, y)
    assert metrics["id_acc"] == pytest.approx(np.mean(id_accs), abs=1e-6)
    assert metrics["train_loss"] == pytest.approx(train_loss_sum / len(y), rel=1e-5)
    assert metrics["train_acc"] == pytest.approx(train_acc, abs=1e-6)
    assert metrics["value"] == metrics["train_loss"]
    assert len(id_accs) == len(envs) - 1


@pytest.mark.parametrize("fraction", [0.2, 0.3, 0.1])
def test_holdout_split_sizes_are_domainbeds(fraction):
    objective = make_objective("rotated_digits", {"holdout_fraction": fraction})
    envs = objective.data.environments
    assert sum(len(e) for e in envs) == 1797
    for env, (inn, out) in zip(envs, objective.splits):
        assert len(out) == int(len(env) * fraction)
        assert len(inn) + len(out) == len(env)
        # a partition: every example of the env lands in exactly one part
        rows = torch.cat([inn.x, out.x]).flatten(1)
        assert torch.equal(
            torch.sort(rows.sum(1)).values, torch.sort(env.x.flatten(1).sum(1)).values
        )
    train = objective.train_envs
    assert len(train) == len(envs) - 1
    assert [t.name for t in train] == [
        f"{e.name}_in" for i, e in enumerate(envs) if i != objective.data.test_env
    ]


def test_build_model_is_seeded_and_get_objective_wires_the_trial():
    objective = make_objective(seed=5, algorithm="irm", irm_lambda=7.0, irm_anneal_iters=3)
    a, b = objective.build_model(), objective.build_model()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    other = make_objective(seed=6).build_model()
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), other.parameters()))
    got = objective.get_objective()
    assert got["algorithm"] == IRM(penalty_weight=7.0, anneal_iters=3, loss_scaling="domainbed")
    paper = make_objective(algorithm="irm", irm_loss="irm_paper").get_objective()["algorithm"]
    assert paper.loss_scaling == "irm_paper"
    # DomainBed's IRM.update (and Naganuma et al.'s fork) restart with Adam at the switch
    assert got["steps"] == 20 and got["seed"] == 5 and got["reset_to"] == "adam"
    assert got["train_envs"] is objective.train_envs
    assert isinstance(make_objective().get_objective()["algorithm"], ERM)


def good():
    cls = registry.objective_class()
    return {**registry.defaults(cls), **OBJ}


@pytest.mark.parametrize(
    "bad",
    [
        {"steps": 0},
        {"eval_every": 0},
        {"algorithm": "dro"},
        {"irm_reset_to": "sgd"},
        {"irm_loss": "divided"},
        {"depth": 0},
        {"width": 0},
        {"dropout": 1.0},
        {"model": "cnn", "dropout": -0.5},
        {"model": "no_such_model"},
        {"algorithm": "irm", "irm_lambda": -1.0},
        {"algorithm": "irm", "irm_anneal_iters": -1},
    ],
)
def test_check_parameters_rejects_bad_values(bad):
    cls = registry.objective_class()
    cls.check_parameters(good())  # the base is fine
    with pytest.raises(ValueError):
        cls.check_parameters({**good(), **bad})


def test_check_parameters_accepts_other_families():
    cls = registry.objective_class()
    cls.check_parameters({**good(), "model": "mnist_cnn", "depth": 0})  # not a sized family
    cls.check_parameters({**good(), "model": "timm:resnet18"})


def test_set_data_rejects_bad_parameters():
    with pytest.raises(ValueError):
        make_objective(steps=0)
