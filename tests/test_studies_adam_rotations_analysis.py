"""Slowdown under rotations against hand-computed cases."""

import math

import numpy as np
import pandas as pd
import pytest

from shiftbench.studies.adam_rotations.analysis import (
    invariance_verdict,
    ordering_verdict,
    paired_difference,
    scope_label,
    seed_interval,
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


OFFSETS = (-0.01, 0.0, 0.01)  # per-seed offsets shared by every scope: seeds pair the scopes
NOISE = (0.004, -0.006, 0.002)  # per-seed noise of one scope's difference, mean 0


def runs(losses, initial=2.3, offsets=OFFSETS, noise=NOISE):
    """One row per seed and scope: final loss = the scope's loss + the seed's offset (shared
    by all scopes, as a seed's initialization is) + the scope's own noise (alternating sign
    by scope so that paired differences keep a spread)."""
    rows = []
    for k, (scope, loss) in enumerate(losses.items()):
        for seed, (offset, eps) in enumerate(zip(offsets, noise)):
            rows.append(
                {
                    "seed": seed,
                    "scope": scope,
                    "initial_loss": initial,
                    "final_loss": loss + offset + (eps if k % 2 else -eps),
                }
            )
    return pd.DataFrame(rows)


def test_seed_interval_is_the_student_t_interval_of_the_mean():
    """Hand computation: values 1, 2, 3 have mean 2, sd 1, t(0.975, 2) = 4.302653."""
    low, high = seed_interval([1.0, 2.0, 3.0, math.nan])
    assert (low, high) == pytest.approx((2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)))
    assert all(math.isnan(b) for b in seed_interval([1.0]))


def test_paired_difference_removes_the_seed_effect():
    """Seed offsets of 0.5 nats swamp a 0.05 gap between scopes unless the seeds are paired."""
    data = runs({"none": 1.0, "global": 1.05}, offsets=(-0.5, 0.0, 0.5))
    diff = paired_difference(data, "none", "global")
    assert diff["mean"] == pytest.approx(0.05)
    assert diff["seeds"] == 3
    d = np.array([0.008, -0.012, 0.004]) + 0.05  # global - none, per seed, by hand
    half = 4.302653 * d.std(ddof=1) / math.sqrt(3)
    assert (diff["low"], diff["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert diff["low"] > 0


def test_ordering_verdict_follows_its_stated_rule():
    paper = {"none": 1.0, "output": 1.0, "input": 1.1, "layer": 1.2, "global": 1.3, "svd": 0.8}
    text = ordering_verdict(runs(paper))
    assert (
        "ordering none ~ output <= input <= layer <= global holds (3 of 3 steps resolved" in text
    )
    assert "over 3 seeds" in text and "global-layer +0.100 [" in text
    assert "SVD helps" in text
    reversed_chain = {**paper, "global": 0.9, "svd": 1.0}
    text = ordering_verdict(runs(reversed_chain))
    assert "does not hold (global-layer resolved the wrong way)" in text
    assert "SVD does not clearly help" in text
    unresolved = ordering_verdict(runs({**paper, "global": 1.195}))  # within the noise
    assert "holds (2 of 3 steps resolved upward, none reversed)" in unresolved
    worse_output = ordering_verdict(runs({**paper, "output": 1.05}))
    assert "does not hold (output-none resolved the wrong way)" in worse_output
    assert "holds" in ordering_verdict(runs({**paper, "output": 0.95}))  # better is allowed
    assert "SVD hurts" in ordering_verdict(runs({**paper, "svd": 1.2}))


def test_ordering_verdict_ties_differences_under_the_tie_threshold():
    """Runs that all reach a loss near 0 with almost no spread tie: no ordering is broken by
    differences of 1e-5 nats, and one of 0.05 still is."""
    tiny = dict(offsets=(0.0, 0.0, 0.0), noise=(1e-6, -1e-6, 0.0))
    converged = {"none": 2e-5, "output": 1e-5, "input": 3e-5, "layer": 1e-5, "global": 0.04}
    text = ordering_verdict(runs(converged, **tiny))
    assert "holds" in text and "SVD" not in text
    broken = {**converged, "layer": 0.06}
    assert "does not hold" in ordering_verdict(runs(broken, **tiny))


def test_vacuous_comparisons_get_no_verdict():
    paper = {"none": 1.0, "output": 1.0, "input": 1.1, "layer": 1.2, "global": 1.3, "svd": 0.8}
    text = ordering_verdict(runs(paper, initial=1.02))
    assert "vacuous: the unrotated run did not train (loss 1.020 -> 1.000)" in text
    assert "holds" not in text and "help" not in text
    assert "vacuous" not in ordering_verdict(runs(paper))
    saturated = {scope: 1e-4 * (i + 1) for i, scope in enumerate(paper)}
    text = ordering_verdict(runs(saturated, offsets=(0, 0, 0), noise=(1e-5, -1e-5, 0)))
    assert text.count("every scope saturated") == 2 and "holds" not in text
    tied = {"none": 1.0, "output": 1.003, "input": 1.0, "layer": 1.004, "global": 1.002}
    text = ordering_verdict(runs(tied))
    assert "vacuous: all 5 scopes tie" in text and "holds" not in text


def test_invariance_verdict_of_an_equivariant_control():
    text = invariance_verdict(runs({"none": 0.5, "global": 0.503}))
    assert text.startswith("invariance: global matches none (+0.003 [")
    assert text.endswith("] nats over 3 seeds)")
    text = invariance_verdict(runs({"none": 0.5, "global": 0.7}))
    assert "global differs from none (+0.200 [" in text
    one_seed = runs({"none": 0.5, "global": 0.5}, noise=(0, 0, 0)).query("seed == 0")
    assert invariance_verdict(one_seed) == (
        "invariance: global matches none (+0.000 [no interval] nats over 1 seeds)"
    )
    stuck = runs({"none": 2.29, "global": 2.30}, initial=2.30)
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
