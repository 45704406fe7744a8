"""Solver plugins: training through TrialRunner equals a hand-written torch loop (same init,
sampler and optimizer, weight decay written out by hand: coupled L2 for SGD, RMSProp and
Adam, decoupled for AdamW), names equal file stems, search spaces sample valid values, and a
trial's numbers are deterministic."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftbench.data.seeds import seed_hash
from shiftbench.plugins import registry
from shiftbench.spec.search import random_samples
from shiftbench.training.algorithms import IRM
from shiftbench.training.loop import solver_space
from shiftbench.trials.runner import TrialRunner
from shiftbench.trials.trial import Trial

ROOT = Path(__file__).resolve().parents[1]
SOLVERS = ["adam", "adamw", "momentum", "nesterov", "rmsprop", "sgd"]
STEPS, EVAL_EVERY, BATCH, WIDTH = 20, 10, 16, 16
OBJ = {"steps": STEPS, "eval_every": EVAL_EVERY, "model": "mlp", "depth": 1, "width": WIDTH}
HPARAMS = {
    "sgd": {"lr": 0.2, "weight_decay": 0.05, "batch_size": BATCH},
    "momentum": {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "batch_size": BATCH},
    "nesterov": {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.05, "batch_size": BATCH},
    "rmsprop": {"lr": 3e-3, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.05, "batch_size": BATCH},
    "adam": {
        "lr": 1e-2,
        "beta1": 0.8,
        "beta2": 0.99,
        "eps": 1e-6,
        "weight_decay": 0.05,
        "batch_size": BATCH,
    },
    "adamw": {
        "lr": 1e-2,
        "beta1": 0.8,
        "beta2": 0.99,
        "eps": 1e-6,
        "weight_decay": 0.05,
        "batch_size": BATCH,
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_trial(solver, hparams=None, seed=1, **objective):
    obj_cls = registry.objective_class()
    obj = {k: v for k, v in registry.defaults(obj_cls).items() if k != "seed"}
    ds = registry.defaults(registry.dataset_class("colored_digits"))
    cls = registry.solver_class(solver)
    params = {**registry.defaults(cls), **(HPARAMS[solver] if hparams is None else hparams)}
    return Trial.make("colored_digits", ds, {**obj, **OBJ, **objective}, solver, params, seed)


@pytest.fixture(scope="module")
def runner():
    return TrialRunner({"test": True}, device="cpu")


# --- the hand-written reference -------------------------------------------------------------


def hand_data(seed_split=0, fraction=0.2, test_env=2):
    data = registry.dataset_class("colored_digits").get_instance().get_data()["data"]
    envs = data.environments
    splits = []
    for i, env in enumerate(envs):
        # DomainBed's split seed, seed_hash(trial_seed, env) (checked in tests/test_study.py)
        perm = np.random.RandomState(seed_hash(seed_split, i)).permutation(len(env))
        n_out = int(len(env) * fraction)
        splits.append((perm[n_out:], perm[:n_out]))
    train = [
        (env.x[inn], env.y[inn])
        for i, (env, (inn, _)) in enumerate(zip(envs, splits))
        if i != test_env
    ]
    return envs, splits, train, test_env


def hand_model(seed, in_features=2 * 8 * 8, classes=2):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_features, WIDTH),
        nn.ReLU(),
        nn.Dropout(0.0),
        nn.Linear(WIDTH, classes),
    )


def hand_optimizer(solver, hp, params):
    """The torch optimizer with weight decay switched off (it is applied by hand)."""
    if solver == "sgd":
        return torch.optim.SGD(params, lr=hp["lr"])
    if solver in ("momentum", "nesterov"):
        return torch.optim.SGD(
            params, lr=hp["lr"], momentum=hp["momentum"], nesterov=solver == "nesterov"
        )
    if solver == "rmsprop":
        return torch.optim.RMSprop(params, lr=hp["lr"], alpha=hp["alpha"], eps=hp["eps"])
    return torch.optim.Adam(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])


def hand_metrics(model, envs, splits, train, test_env):
    model.eval()
    with torch.no_grad():
        x = torch.cat([t[0] for t in train])
        y = torch.cat([t[1] for t in train])
        train_loss = F.cross_entropy(model(x), y).item()
        test = envs[test_env]
        ood_acc = (model(test.x).argmax(1) == test.y).double().mean().item()
        id_accs = [
            (model(env.x[out]).argmax(1) == env.y[out]).double().mean().item()
            for i, (env, (_, out)) in enumerate(zip(envs, splits))
            if i != test_env
        ]
    model.train()
    return {"train_loss": train_loss, "ood_acc": ood_acc, "id_acc": float(np.mean(id_accs))}


def hand_train(solver, hp, seed, steps=STEPS, loss_fn=None, reset=None, lr_at=None, clip=0.0):
    """Plain torch: seeded init, the per-env index draws, explicit weight decay; ``lr_at(step)``
    sets the learning rate of each step, ``clip`` > 0 rescales the gradient to that norm."""
    envs, splits, train, test_env = hand_data()
    model = hand_model(seed)
    params = list(model.parameters())
    opt = hand_optimizer(solver, hp, params)
    gen = torch.Generator().manual_seed(seed)
    wd = hp["weight_decay"]
    curve = {0: hand_metrics(model, envs, splits, train, test_env)}
    for step in range(steps):
        if reset is not None and step == reset[0]:
            opt = reset[1](params)
        batches = []
        for x, y in train:
            idx = torch.randint(len(y), (hp["batch_size"],), generator=gen)
            batches.append((x[idx], y[idx]))
        if loss_fn is None:
            loss = F.cross_entropy(
                model(torch.cat([b[0] for b in batches])), torch.cat([b[1] for b in batches])
            )
        else:
            loss = loss_fn(model, batches, step)
        opt.zero_grad()
        loss.backward()
        lr = hp["lr"] if lr_at is None else lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        with torch.no_grad():
            norm = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
            for p in params:
                if clip and norm > clip:  # torch's clip_grad_norm_: max_norm / (norm + 1e-6)
                    p.grad.mul_(clip / (norm + 1e-6))
                if solver == "adamw":  # decoupled: shrink the weights, not the gradient
                    p.mul_(1 - lr * wd)
                else:  # coupled L2: the gradient of wd/2 |w|^2
                    p.grad.add_(p, alpha=wd)
        opt.step()
        if (step + 1) % EVAL_EVERY == 0:
            curve[step + 1] = hand_metrics(model, envs, splits, train, test_env)
    return model, curve


def runner_curve(outcome):
    return {row["step"]: row for row in outcome.rows}


def assert_curves_equal(outcome, curve):
    assert outcome.status == "done", outcome.error
    rows = runner_curve(outcome)
    assert sorted(rows) == sorted(curve) == [0, 10, 20]
    for step, expected in curve.items():
        assert rows[step]["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
        assert rows[step]["ood_acc"] == pytest.approx(expected["ood_acc"], abs=1e-6)
        assert rows[step]["id_acc"] == pytest.approx(expected["id_acc"], abs=1e-6)


def trained_model(trial):
    """The solver's model after the run, through the same pieces TrialRunner wires."""
    from shiftbench.trials.runner import Checkpointer

    params = dict(trial.objective_params)
    objective = registry.objective_class().get_instance(**params, seed=trial.seed)
    objective.device = "cpu"
    objective.set_data(
        **registry.dataset_class(trial.dataset)
        .get_instance(**dict(trial.dataset_params))
        .get_data()
    )
    solver = registry.solver_class(trial.solver).get_instance(**dict(trial.solver_params))
    solver.set_objective(**objective.get_objective())
    solver.run(Checkpointer(objective, solver, params["steps"], params["eval_every"]))
    return solver.model


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", SOLVERS)
def test_runner_equals_a_hand_written_torch_loop(runner, solver):
    trial = make_trial(solver)
    outcome = runner.run(trial, "test")
    model, curve = hand_train(solver, HPARAMS[solver], trial.seed)
    assert_curves_equal(outcome, curve)
    # the final weights themselves
    got = trained_model(trial)
    for a, b in zip(got.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the bookkeeping columns
    rows = runner_curve(outcome)
    examples = sum(len(y) for _, y in hand_data()[2])
    assert rows[20]["epoch"] == pytest.approx(20 * BATCH * 2 / examples)
    assert rows[20]["hp.lr"] == HPARAMS[solver]["lr"] and rows[20]["seed"] == trial.seed


def nanogpt_lr(step, peak, warmup, steps, min_lr):
    """nanoGPT's train.py get_lr written out, decaying over the run's last step."""
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    ratio = (step - warmup) / (steps - 1 - warmup)
    return min_lr + 0.5 * (1.0 + np.cos(np.pi * ratio)) * (peak - min_lr)


@pytest.mark.parametrize("solver", ["sgd", "adamw"])
def test_warmup_cosine_and_clipping_equal_a_hand_written_loop(runner, solver):
    recipe = {"lr_schedule": "cosine", "warmup_steps": 4, "min_lr_ratio": 0.1}
    hp = {**HPARAMS[solver], **recipe, "max_grad_norm": 0.05}
    trial = make_trial(solver, hp)
    outcome = runner.run(trial, "test")
    lr = HPARAMS[solver]["lr"]
    _, curve = hand_train(
        solver,
        HPARAMS[solver],
        trial.seed,
        lr_at=lambda step: nanogpt_lr(step, lr, 4, STEPS, 0.1 * lr),
        clip=0.05,
    )
    assert_curves_equal(outcome, curve)
    assert outcome.rows[-1]["hp.max_grad_norm"] == 0.05
    assert outcome.rows[-1]["hp.lr_schedule"] == "cosine"
    # without the recipe the numbers differ
    _, plain = hand_train(solver, HPARAMS[solver], trial.seed)
    assert abs(plain[20]["train_loss"] - curve[20]["train_loss"]) > 1e-6


def test_rotation_settings_reach_the_rotated_optimizer(runner):
    hp = {**HPARAMS["adam"], "rotation": "global", "rotation_block_size": 7}
    trial = make_trial("adam", hp)
    assert dict(trial.solver_params)["rotation_block_size"] == 7
    solver = registry.solver_class("adam").get_instance(**dict(trial.solver_params))
    solver.model, solver.seed = nn.Linear(3, 2), 0
    optimizer = solver.build_optimizer(solver.model.parameters())
    assert (optimizer.block_size, optimizer.svd_every) == (7, 250)
    assert len(optimizer.base.param_groups[0]["params"]) == 1  # weight and bias mixed
    solver.rotation_layers = "attn+mlp"  # a bare Linear's parameters are "other"
    optimizer = solver.build_optimizer(solver.model.parameters())
    assert len(optimizer.base.param_groups[0]["params"]) == 2  # neither rotated
    outcome = runner.run(trial, "test")
    assert outcome.status == "done", outcome.error
    assert outcome.rows[-1]["hp.rotation_block_size"] == 7


def test_weight_decay_coupling_matters():
    # Same hyperparameters: coupled (Adam) and decoupled (AdamW) decay give different weights,
    # so the equality above really tells the two apart.
    hp = HPARAMS["adam"]
    coupled, _ = hand_train("adam", hp, seed=1)
    decoupled, _ = hand_train("adamw", hp, seed=1)
    diff = max(
        (a - b).abs().max().item() for a, b in zip(coupled.parameters(), decoupled.parameters())
    )
    assert diff > 1e-4


@pytest.mark.parametrize("reset_to", ["same", "adam"])
def test_irm_resets_the_optimizer_when_the_penalty_switches_on(runner, reset_to):
    hp = HPARAMS["momentum"]
    trial = make_trial(
        "momentum", algorithm="irm", irm_lambda=10.0, irm_anneal_iters=5, irm_reset_to=reset_to
    )
    irm = IRM(penalty_weight=10.0, anneal_iters=5)
    if reset_to == "adam":
        # Adam keeps the coupled weight decay in the optimizer: the hand loop adds wd itself
        def fresh(params):
            return torch.optim.Adam(params, lr=hp["lr"])
    else:

        def fresh(params):
            return hand_optimizer("momentum", hp, params)

    _, curve = hand_train("momentum", hp, trial.seed, loss_fn=irm.loss, reset=(5, fresh))
    assert_curves_equal(runner.run(trial, "test"), curve)
    # without the reset the numbers differ (the momentum buffer survives)
    _, no_reset = hand_train("momentum", hp, trial.seed, loss_fn=irm.loss)
    assert abs(no_reset[20]["train_loss"] - curve[20]["train_loss"]) > 1e-6


@pytest.mark.parametrize("solver", SOLVERS)
def test_plugin_name_is_the_file_stem(solver):
    assert (ROOT / "solvers" / f"{solver}.py").is_file()
    assert registry.solver_class(solver).name == solver


def test_the_six_solvers_are_the_plugins():
    assert sorted(registry.names("solvers")) == SOLVERS


@pytest.mark.parametrize("solver", SOLVERS)
def test_search_space_samples_are_valid(solver):
    cls = registry.solver_class(solver)
    space = solver_space(cls)
    assert set(space) <= set(cls.parameters)
    assert "lr" in space
    samples = random_samples(space, 50, seed=0, scope=("colored_digits", solver))
    assert len({s["lr"] for s in samples}) == 50
    for sample in samples:
        instance = cls.get_instance(**{**registry.defaults(cls), **sample})
        instance.validate()
        kwargs = instance.optimizer_kwargs()
        assert kwargs["lr"] == sample["lr"] and kwargs["weight_decay"] == sample["weight_decay"]
        # the optimizer accepts them
        cls.optimizer_class([torch.zeros(1, requires_grad=True)], **kwargs)
    registry.solver_class(solver).get_instance(**registry.defaults(cls)).validate()


@pytest.mark.parametrize(
    "solver, bad",
    [
        ("sgd", {"lr": 0.0}),
        ("sgd", {"weight_decay": -1e-3}),
        ("sgd", {"batch_size": 0}),
        ("sgd", {"rotation": "diagonal"}),
        ("sgd", {"rotation_block_size": 0}),
        ("sgd", {"svd_every": 0}),
        ("sgd", {"rotation_layers": "attn+ffn"}),
        ("sgd", {"lr_schedule": "linear"}),
        ("sgd", {"warmup_steps": -1}),
        ("sgd", {"min_lr_ratio": 1.5}),
        ("sgd", {"max_grad_norm": -1.0}),
        ("momentum", {"momentum": 1.0}),
        ("rmsprop", {"alpha": 1.0}),
        ("rmsprop", {"eps": 0.0}),
        ("adam", {"beta2": 1.0}),
        ("adamw", {"eps": -1e-8}),
    ],
)
def test_validate_rejects_impossible_values(solver, bad):
    cls = registry.solver_class(solver)
    with pytest.raises(ValueError):
        cls.get_instance(**{**registry.defaults(cls), **bad}).validate()


def test_two_runs_of_a_trial_give_identical_numbers(runner):
    trial = make_trial("adam")
    first, second = runner.run(trial, "test"), runner.run(trial, "test")
    metric_columns = [k for k in first.rows[-1] if k.endswith(("_acc", "_loss"))]
    assert len(metric_columns) > 8
    for a, b in zip(first.rows, second.rows, strict=True):
        assert {k: a[k] for k in metric_columns} == {k: b[k] for k in metric_columns}
    # a fresh runner (no cached data) agrees too
    third = TrialRunner({}, device="cpu").run(trial, "test")
    assert [r["train_loss"] for r in third.rows] == [r["train_loss"] for r in first.rows]


def test_failed_and_diverged_trials_are_rows(runner):
    failed = runner.run(make_trial("sgd", {"lr": -1.0, "batch_size": BATCH}), "test")
    assert failed.status == "failed" and "lr must be > 0" in failed.error
    assert [r["step"] for r in failed.rows] == [-1]
    diverged = runner.run(make_trial("sgd", {"lr": 1e12, "batch_size": BATCH}), "test")
    assert diverged.status == "diverged"
    assert not np.isfinite(diverged.rows[-1]["train_loss"])
