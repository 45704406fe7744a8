"""Slowdown under rotations against hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

from shiftbench.studies.adam_rotations.analysis import (
    invariance_verdict,
    ordering_verdict,
    scope_label,
    slowdowns,
    sort_scopes,
    steps_to_reach,
)


def curve(steps, losses):
    return pd.DataFrame({"step": steps, "train_loss": losses})


def test_steps_to_reach_interpolates_between_checkpoints():
    c = curve([0, 10, 20], [2.0, 1.0, 0.5])
    assert steps_to_reach(c, 1.0) == 10
    assert steps_to_reach(c, 0.75) == pytest.approx(15.0)
    assert steps_to_reach(c, 3.0) == 0
    assert math.isinf(steps_to_reach(c, 0.1))


def ledger(scale_by_scope, seeds=(0, 1)):
    """Loss exp(-step / (100 * scale)): a scope with scale 2 needs twice the steps."""
    rows = []
    steps = np.arange(0, 1001, 10)
    for seed in seeds:
        for scope, scale in scale_by_scope.items():
            for step in steps:
                limit = 500 if scope == "none" else 1000
                if step <= limit:
                    rows.append(
                        {
                            "dataset": "d",
                            "solver": "adam",
                            "seed": seed,
                            "step": step,
                            "hp.rotation": scope,
                            "train_loss": math.exp(-step / (100 * scale)),
                        }
                    )
    return pd.DataFrame(rows)


def test_a_run_twice_as_slow_has_100_percent_slowdown():
    table = slowdowns(ledger({"none": 1.0, "global": 2.0, "output": 1.0})).set_index(
        ["seed", "scope"]
    )
    assert table.loc[(0, "none"), "slowdown_pct"] == pytest.approx(0.0)
    assert table.loc[(0, "output"), "slowdown_pct"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc[(1, "global"), "slowdown_pct"] == pytest.approx(100.0, rel=1e-2)


def test_runs_without_a_baseline_are_left_out_and_never_reaching_is_infinite():
    data = ledger({"none": 1.0, "svd": 100.0})
    table = slowdowns(data).set_index(["seed", "scope"])
    assert math.isinf(table.loc[(0, "svd"), "slowdown_pct"])
    assert slowdowns(data[data["hp.rotation"] != "none"]).empty


def test_a_baseline_that_never_trained_gives_no_slowdown():
    """A flat baseline reaches its own final loss at step 0: there is no speed to compare."""
    data = ledger({"none": 1.0, "global": 1.0})
    data.loc[data["hp.rotation"] == "none", "train_loss"] = 2.3
    table = slowdowns(data).set_index(["seed", "scope"])
    assert table.loc[(0, "none"), "baseline_steps"] == 0
    assert math.isnan(table.loc[(0, "none"), "slowdown_pct"])
    assert math.isnan(table.loc[(0, "global"), "slowdown_pct"])


def summary(losses, std=0.01):
    return pd.DataFrame(
        {
            "scope": list(losses),
            "final_loss_mean": list(losses.values()),
            "final_loss_std": [std] * len(losses),
        }
    )


def test_ordering_verdict_follows_its_stated_rule():
    paper = {"none": 1.0, "output": 1.0, "input": 1.1, "layer": 1.2, "global": 1.3, "svd": 0.8}
    text = ordering_verdict(summary(paper))
    assert "ordering none ~ output <= input <= layer <= global holds" in text
    assert "SVD helps" in text
    reversed_chain = {**paper, "global": 0.9, "svd": 1.0}
    text = ordering_verdict(summary(reversed_chain))
    assert "does not hold" in text and "SVD does not clearly help" in text
    assert "holds" in ordering_verdict(summary({**paper, "global": 1.195}))  # within one std


def test_ordering_verdict_ties_differences_under_the_tie_threshold():
    """Runs that all reach a loss near 0 with almost no spread tie: no ordering is broken by
    differences of 1e-5 nats, and one of 0.05 still is."""
    converged = {"none": 2e-5, "output": 1e-5, "input": 3e-5, "layer": 1e-5, "global": 0.04}
    text = ordering_verdict(summary(converged, std=1e-6))
    assert "holds" in text and "SVD" not in text
    broken = {**converged, "layer": 0.06}
    assert "does not hold" in ordering_verdict(summary(broken, std=1e-6))


def test_vacuous_comparisons_get_no_verdict():
    paper = {"none": 1.0, "output": 1.0, "input": 1.1, "layer": 1.2, "global": 1.3, "svd": 0.8}
    untrained = summary(paper).assign(initial_loss_mean=1.02)
    text = ordering_verdict(untrained)
    assert "vacuous: the unrotated run did not train (loss 1.020 -> 1.000)" in text
    assert "holds" not in text and "help" not in text
    trained = summary(paper).assign(initial_loss_mean=2.3)
    assert "vacuous" not in ordering_verdict(trained)
    saturated = {scope: 1e-4 * (i + 1) for i, scope in enumerate(paper)}
    text = ordering_verdict(summary(saturated, std=1e-5))
    assert text.count("every scope saturated") == 2 and "holds" not in text
    tied = {"none": 1.0, "output": 1.003, "input": 1.0, "layer": 1.004, "global": 1.002}
    text = ordering_verdict(summary(tied))
    assert "vacuous: all 5 scopes tie" in text and "holds" not in text


def test_invariance_verdict_of_an_equivariant_control():
    frame = summary({"none": 0.5, "global": 0.503}).assign(initial_loss_mean=2.3)
    assert invariance_verdict(frame) == "invariance: global matches none (+0.003 nats)"
    frame = summary({"none": 0.5, "global": 0.7}).assign(initial_loss_mean=2.3)
    assert "global differs from none (+0.200 nats)" in invariance_verdict(frame)
    one_seed = summary({"none": 0.5, "global": 0.5}, std=math.nan).assign(initial_loss_mean=2.3)
    assert invariance_verdict(one_seed) == "invariance: global matches none (+0.000 nats)"
    stuck = summary({"none": 2.29, "global": 2.30}).assign(initial_loss_mean=2.30)
    assert invariance_verdict(stuck).startswith("vacuous: the unrotated run did not train")


def test_scope_labels_keep_layer_restricted_and_block_size_runs_apart():
    rows = pd.DataFrame(
        {
            "hp.rotation": ["none", "global", "global", "global", "output"],
            "hp.rotation_layers": [None, None, "attn", None, None],
            "hp.rotation_block_size": [None, 768, 768, 64, 768],
        }
    )
    assert scope_label(rows).tolist() == [
        "none",
        "global/768",
        "global[attn]/768",
        "global/64",
        "output/768",
    ]
    one_size = rows.assign(**{"hp.rotation_block_size": [None, 768, 768, 768, 768]})
    assert scope_label(one_size).tolist() == ["none", "global", "global[attn]", "global", "output"]
    frame = pd.DataFrame({"task": "t", "solver": "adam", "scope": scope_label(rows)})
    assert sort_scopes(frame)["scope"].tolist() == [
        "none",
        "output/768",
        "global/64",
        "global/768",
        "global[attn]/768",
    ]
