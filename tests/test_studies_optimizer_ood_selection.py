"""DomainBed model selection on hand-built ledgers: the checkpoint per trial; DomainBed's
protocol (the best sample per trial seed, then the mean and DomainBed's error bar over trial
seeds) against a plain-Python transcription of DomainBed's code; and the pooled option (the best
sample by its mean score over seeds)."""

import itertools
import statistics

import numpy as np
import pandas as pd
import pytest

from shiftbench.studies.optimizer_ood.selection import METHODS, select, selected_checkpoints


def row(solver, sample, seed, step, id_acc, ood_acc, oracle_acc, dataset="d", test_env=0):
    return {
        "dataset": dataset,
        "ds.test_env": test_env,
        "solver": solver,
        "solver_label": f"{solver}[s{sample}]",
        "sample": sample,
        "seed": seed,
        "trial_id": f"{dataset}-{test_env}-{solver}-{sample}-{seed}",
        "step": step,
        "id_acc": id_acc,
        "ood_acc": ood_acc,
        "oracle_acc": oracle_acc,
    }


def small_ledger():
    """sgd: sample 0 peaks early in id_acc, sample 1 is better on average; one failed row."""
    return pd.DataFrame(
        [
            # sgd sample 0, seed 0: id peak at step 10
            row("sgd", 0, 0, 0, 0.50, 0.40, 0.45),
            row("sgd", 0, 0, 10, 0.80, 0.60, 0.62),
            row("sgd", 0, 0, 20, 0.70, 0.65, 0.70),
            # sgd sample 0, seed 1: id peak at step 20
            row("sgd", 0, 1, 0, 0.50, 0.40, 0.45),
            row("sgd", 0, 1, 10, 0.60, 0.50, 0.52),
            row("sgd", 0, 1, 20, 0.66, 0.58, 0.90),
            # sgd sample 1: id 0.78 and 0.76 -> mean 0.77 > (0.80 + 0.66) / 2 = 0.73
            row("sgd", 1, 0, 0, 0.50, 0.40, 0.40),
            row("sgd", 1, 0, 10, 0.78, 0.30, 0.35),
            row("sgd", 1, 0, 20, 0.70, 0.35, 0.30),
            row("sgd", 1, 1, 0, 0.50, 0.40, 0.40),
            row("sgd", 1, 1, 10, 0.70, 0.33, 0.31),
            row("sgd", 1, 1, 20, 0.76, 0.39, 0.32),
            # a failed attempt's row (step -1, no metrics) is ignored
            {**row("sgd", 2, 0, -1, np.nan, np.nan, np.nan)},
        ]
    )


def test_training_domain_on_a_small_ledger():
    table = select(small_ledger(), "training_domain", per_seed=False)
    assert len(table) == 1
    got = table.iloc[0]
    assert got["sample"] == 1 and got["label"] == "sgd[s1]" and got["seeds"] == 2
    # chosen checkpoints: seed 0 step 10 (id 0.78, ood 0.30), seed 1 step 20 (0.76, 0.39)
    assert got["id_acc_mean"] == pytest.approx(0.77)
    assert got["ood_acc_mean"] == pytest.approx((0.30 + 0.39) / 2)
    assert got["ood_acc_std"] == pytest.approx(statistics.stdev([0.30, 0.39]))
    assert got["oracle_acc_mean"] == pytest.approx((0.35 + 0.32) / 2)


def test_oracle_on_a_small_ledger():
    table = select(small_ledger(), "oracle", per_seed=False)
    got = table.iloc[0]
    # last checkpoints' oracle_acc: sample 0 -> (0.70 + 0.90) / 2 = 0.80; sample 1 -> 0.31
    assert got["sample"] == 0
    assert got["oracle_acc_mean"] == pytest.approx(0.80)
    assert got["ood_acc_mean"] == pytest.approx((0.65 + 0.58) / 2)
    assert got["ood_acc_std"] == pytest.approx(statistics.stdev([0.65, 0.58]))
    assert got["id_acc_mean"] == pytest.approx((0.70 + 0.66) / 2)


def test_selected_checkpoints_one_per_trial():
    picked = selected_checkpoints(small_ledger(), METHODS["training_domain"])
    steps = dict(zip(picked["trial_id"], picked["step"]))
    assert steps == {
        "d-0-sgd-0-0": 10,
        "d-0-sgd-0-1": 20,
        "d-0-sgd-1-0": 10,
        "d-0-sgd-1-1": 20,
    }
    last = selected_checkpoints(small_ledger(), METHODS["oracle"])
    assert set(last["step"]) == {20} and len(last) == 4


def random_ledger(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, test_env, solver in itertools.product(["a", "b"], [0, 1], ["sgd", "adam"]):
        for sample, run_seed in itertools.product(range(3), range(3)):
            for step in (0, 50, 100, 150):
                rows.append(row(solver, sample, run_seed, step, *rng.random(3), dataset, test_env))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)


def by_hand(frame, score, last):
    """Plain-Python DomainBed selection over a list of dicts."""
    records = frame.to_dict("records")
    trials = {}
    for r in records:
        trials.setdefault(r["trial_id"], []).append(r)
    chosen = {}
    for rs in trials.values():
        pick = max(rs, key=lambda r: r["step"] if last else r[score])
        chosen.setdefault((pick["dataset"], pick["ds.test_env"], pick["solver"]), []).append(pick)
    out = {}
    for group, picks in chosen.items():
        samples = {}
        for p in picks:
            samples.setdefault(p["sample"], []).append(p)
        best = max(samples, key=lambda s: statistics.mean(p[score] for p in samples[s]))
        ps = samples[best]
        out[group] = {
            "sample": best,
            "ood_acc_mean": statistics.mean(p["ood_acc"] for p in ps),
            "ood_acc_std": statistics.stdev(p["ood_acc"] for p in ps),
            "id_acc_mean": statistics.mean(p["id_acc"] for p in ps),
            "oracle_acc_mean": statistics.mean(p["oracle_acc"] for p in ps),
            "seeds": len({p["seed"] for p in ps}),
        }
    return out


@pytest.mark.parametrize(
    "method, score, last",
    [
        ("training_domain", "id_acc", False),
        ("oracle", "oracle_acc", True),
    ],
)
def test_select_matches_a_plain_python_computation(method, score, last):
    frame = random_ledger()
    table = select(frame, method, per_seed=False)
    expected = by_hand(frame, score, last)
    assert len(table) == len(expected) == 8
    for _, got in table.iterrows():
        want = expected[(got["dataset"], got["ds.test_env"], got["solver"])]
        assert got["sample"] == want["sample"] and got["seeds"] == want["seeds"] == 3
        for key in ("ood_acc_mean", "ood_acc_std", "id_acc_mean", "oracle_acc_mean"):
            assert got[key] == pytest.approx(want[key], rel=1e-12)


def test_empty_ledger_selects_nothing():
    frame = small_ledger()
    assert select(frame[frame["step"] < 0], "training_domain").empty


def domainbed_by_hand(frame, score, last):
    """DomainBed's model_selection.py and collect_results.py, transcribed over a list of dicts:
    per (trial seed, condition) the runs grouped by hparams seed, each run's best checkpoint
    (first argmax) or last one, the runs sorted by val_acc and reversed (ties: last hparams
    seed), the first one's test accuracy; then the mean and np.std(x / sqrt(n)) over seeds."""
    groups = {}
    for r in frame.to_dict("records"):
        key = (r["dataset"], r["ds.test_env"], r["solver"])
        groups.setdefault(key, {}).setdefault(r["seed"], {}).setdefault(r["sample"], []).append(r)
    out = {}
    for key, seeds in groups.items():
        accs = []
        for runs in seeds.values():
            run_accs = []
            for hparams_seed in sorted(runs):
                records = sorted(runs[hparams_seed], key=lambda r: r["step"])
                best = records[-1] if last else max(records, key=lambda r: r[score])
                run_accs.append((best[score], best))
            chosen = sorted(run_accs, key=lambda x: x[0])[::-1][0][1]
            accs.append(chosen["ood_acc"])
        out[key] = (np.mean(accs), np.std(list(accs) / np.sqrt(len(accs))))
    return out


@pytest.mark.parametrize(
    "method, score, last", [("training_domain", "id_acc", False), ("oracle", "oracle_acc", True)]
)
def test_domainbed_protocol_is_the_default(method, score, last):
    frame = random_ledger(3)
    # ties between samples and between checkpoints, resolved as DomainBed resolves them
    frame.loc[frame["sample"] == 2, [score]] = frame.loc[frame["sample"] == 0, score].to_numpy()
    frame.loc[frame["step"] == 150, "id_acc"] = frame.loc[frame["step"] == 50, "id_acc"].to_numpy()
    table = select(frame, method, metrics=("ood_acc",))
    expected = domainbed_by_hand(frame, score, last)
    assert len(table) == len(expected) == 8
    for _, got in table.iterrows():
        mean, err = expected[(got["dataset"], got["ds.test_env"], got["solver"])]
        assert got["ood_acc_mean"] == pytest.approx(mean, rel=1e-12)
        assert got["ood_acc_err"] == pytest.approx(err, rel=1e-12)
    pooled = select(frame, method, metrics=("ood_acc",), per_seed=False)
    assert not np.allclose(pooled["ood_acc_mean"], table["ood_acc_mean"])


def test_a_tie_between_samples_goes_to_the_last_one():
    frame = pd.DataFrame(
        [row("sgd", s, 0, 10, 0.7, ood, 0.5) for s, ood in ((0, 0.1), (1, 0.2), (2, 0.3))]
        + [row("sgd", 3, 0, 10, 0.6, 0.9, 0.5)]
    )
    got = select(frame, "training_domain").iloc[0]
    assert got["sample"] == "2" and got["ood_acc_mean"] == pytest.approx(0.3)


def test_old_ledgers_get_the_test_metrics_from_the_environment_columns():
    frame = pd.DataFrame(
        [
            {
                **row("sgd", 0, 0, 10, 0.7, 0.6, 0.5, test_env=1),
                "ds.holdout_fraction": 0.2,
                "env1_in_acc": 0.55,
                "env1_out_acc": 0.5,
                "env0_in_acc": 0.9,
            }
        ]
    )
    got = select(frame, "training_domain").iloc[0]
    assert got["test_in_acc_mean"] == pytest.approx(0.55)
    assert got["avg_test_acc_mean"] == pytest.approx(0.8 * 0.55 + 0.2 * 0.5)
