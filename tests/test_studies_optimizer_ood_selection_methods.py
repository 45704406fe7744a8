"""Model selection (shiftbench.studies.optimizer_ood.selection): each method's checkpoint and
hyperparameter choice on hand-built ledgers, checked against hand-computed picks and
numpy/scipy statistics."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext, Report
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store
from shiftbench.studies.optimizer_ood.selection import (
    condition_columns,
    select,
    selected_checkpoints,
)
from shiftbench.sweep.driver import run_study


def _config(test_env, sample, seed, val_env=None, algorithm="erm"):
    params = {"test_env": test_env} | ({} if val_env is None else {"val_env": val_env})
    return json.dumps(
        {
            "dataset": "toy",
            "dataset_params": params,
            "objective_params": {"algorithm": algorithm},
            "solver": "sgd",
            "solver_params": {"lr": 0.1 * (sample + 1)},
            "seed": seed,
        }
    )


def _rows(sample, seed, id_acc, ood_acc, oracle_acc, algorithm="erm", **envs):
    """One trial of dataset ``toy`` (test env 2 of 3) with one checkpoint per list entry."""
    trial = f"{algorithm}-{sample}-{seed}"
    return [
        {
            "trial_id": trial,
            "status": "done",
            "dataset": "toy",
            "ds.test_env": 2,
            "obj.algorithm": algorithm,
            "obj.steps": 100,
            "solver": "sgd",
            "solver_label": f"sgd[{sample}]",
            "sample": sample,
            "seed": seed,
            "step": 10 * i,
            "id_acc": id_acc[i],
            "ood_acc": ood_acc[i],
            "oracle_acc": oracle_acc[i],
            "config": _config(2, sample, seed, algorithm=algorithm),
            **{k: v[i] for k, v in envs.items()},
        }
        for i in range(len(id_acc))
    ]


@pytest.fixture
def ledger():
    return pd.DataFrame(
        _rows(0, 0, [0.5, 0.8, 0.7], [0.2, 0.4, 0.5], [0.3, 0.3, 0.6])
        + _rows(0, 1, [0.6, 0.7, 0.9], [0.1, 0.3, 0.2], [0.2, 0.2, 0.4])
        + _rows(1, 0, [0.9, 0.6, 0.6], [0.6, 0.1, 0.1], [0.5, 0.5, 0.1])
        + _rows(1, 1, [0.6, 0.6, 0.75], [0.3, 0.3, 0.35], [0.2, 0.2, 0.3])
    )


def test_training_domain_keeps_the_best_id_checkpoint(ledger):
    picked = selected_checkpoints(ledger, "training_domain").set_index("trial_id")
    assert picked["step"].to_dict() == {"erm-0-0": 10, "erm-0-1": 20, "erm-1-0": 0, "erm-1-1": 20}
    assert picked.loc["erm-0-1", "ood_acc"] == 0.2


def test_oracle_keeps_the_last_checkpoint_scored_by_oracle_acc(ledger):
    picked = selected_checkpoints(ledger, "oracle").set_index("trial_id")
    assert set(picked["step"]) == {20}
    assert picked["val_score"].to_dict() == picked["oracle_acc"].to_dict()


def test_pooled_protocol_picks_the_sample_with_the_best_seed_mean(ledger):
    # seed means of the kept id_acc: sample 0: (0.8 + 0.9) / 2, sample 1: (0.9 + 0.75) / 2
    row = select(ledger, "training_domain", per_seed=False).iloc[0]
    assert row["sample"] == 0
    ood = np.array([0.4, 0.2])
    assert row["ood_acc_mean"] == pytest.approx(ood.mean())
    assert row["ood_acc_std"] == pytest.approx(ood.std(ddof=1))
    assert row["ood_acc_se"] == pytest.approx(stats.sem(ood))
    assert row["seeds"] == 2


def test_per_seed_protocol_picks_a_sample_within_each_seed(ledger):
    # DomainBed's protocol, the default: seed 0: sample 1 (0.9 > 0.8); seed 1: sample 0
    row = select(ledger, "training_domain").iloc[0]
    assert row["sample"] == "1,0"
    ood = np.array([0.6, 0.2])
    assert row["ood_acc_mean"] == pytest.approx(ood.mean())
    assert row["ood_acc_se"] == pytest.approx(stats.sem(ood))
    oracle = select(ledger, "oracle", per_seed=True).iloc[0]  # last-step oracle: 0.6 vs 0.1
    assert oracle["sample"] == "0,0"
    assert oracle["ood_acc_mean"] == pytest.approx(np.mean([0.5, 0.2]))


def test_algorithms_are_separate_conditions(ledger):
    irm = ledger.assign(**{"obj.algorithm": "irm", "trial_id": "irm-" + ledger["trial_id"]})
    both = pd.concat([ledger, irm.assign(ood_acc=irm["ood_acc"] + 0.1)], ignore_index=True)
    assert condition_columns(both) == ["dataset", "ds.test_env", "obj.algorithm"]
    table = select(both, "training_domain").set_index("obj.algorithm")
    assert table.loc["irm", "ood_acc_mean"] == pytest.approx(
        table.loc["erm", "ood_acc_mean"] + 0.1
    )


def _companion(sample, test_env, val_env, accs):
    """A run leaving out test_env and val_env; accs: {env: [acc per step]}."""
    rows = _rows(
        sample,
        0,
        [0.0] * 3,
        [0.0] * 3,
        [0.0] * 3,
        **{f"env{e}_in_acc": a for e, a in accs.items()},
    )
    for row in rows:
        row.update(
            trial_id=f"lodo-{sample}-{test_env}-{val_env}",
            config=_config(test_env, sample, 0, val_env),
        )
        row["ds.test_env"], row["ds.val_env"] = test_env, val_env
    return rows


def test_leave_one_domain_out_scores_with_companions_in_either_order():
    main = [
        _rows(
            s,
            0,
            [0.9, 0.9, 0.9],
            ood,
            [0.5] * 3,
            env0_in_acc=[1] * 3,
            env1_in_acc=[1] * 3,
            env2_in_acc=[1] * 3,
        )
        for s, ood in ((0, [0.1, 0.2, 0.3]), (1, [0.4, 0.5, 0.6]))
    ]
    companions = (
        # sample 0: env 0 from the {0, 2} run (test 2, val 0), env 1 from the {1, 2} run
        # named the other way round (test 1, val 2)
        _companion(0, 2, 0, {0: [0.2, 0.6, 0.4], 2: [0.0] * 3})
        + _companion(0, 1, 2, {1: [0.4, 0.6, 0.2], 2: [0.0] * 3})
        + _companion(1, 2, 0, {0: [0.3, 0.3, 0.3], 2: [0.0] * 3})
        + _companion(1, 2, 1, {1: [0.3, 0.3, 0.9], 2: [0.0] * 3})
    )
    ledger = pd.DataFrame(main[0] + main[1] + companions)
    ledger.loc[ledger["ds.val_env"].isna(), "ds.val_env"] = np.nan
    picked = selected_checkpoints(ledger, "leave_one_domain_out").set_index("trial_id")
    # sample 0 scores (0.3, 0.6, 0.3) -> step 10; sample 1 scores (0.3, 0.3, 0.6) -> step 20
    assert picked["step"].to_dict() == {"erm-0-0": 10, "erm-1-0": 20}
    assert picked.loc["erm-0-0", "val_score"] == pytest.approx(0.6)
    assert picked.loc["erm-0-0", "ood_acc"] == 0.2  # the main run's metric
    # a tie at 0.6: DomainBed takes the last hparams sample
    row = select(ledger, "leave_one_domain_out").iloc[0]
    assert row["sample"] == "1"
    assert select(ledger, "leave_one_domain_out", per_seed=False).iloc[0]["sample"] == 1
    # companions never count as trials of the other methods
    assert set(selected_checkpoints(ledger, "training_domain")["trial_id"]) == set(picked.index)
    # a missing companion leaves the sample unscored
    without = ledger[ledger["trial_id"] != "lodo-1-2-1"]
    assert set(selected_checkpoints(without, "leave_one_domain_out")["trial_id"]) == {"erm-0-0"}


def test_no_companions_means_no_leave_one_domain_out_selection(ledger):
    assert selected_checkpoints(ledger, "leave_one_domain_out").empty
    assert select(ledger, "leave_one_domain_out").empty


LODO_STUDY = """
name: lodo
datasets:
  colored_digits: {test_env: [2], val_env: [-1, 0, 1, 2]}
objective: {steps: 20, eval_every: 10, model: mlp, depth: 1, width: 8}
solvers:
  sgd: {lr: {loguniform: [0.01, 0.5]}, batch_size: 32}
search: {trials_per_solver: 2}
seeds: [0, 1]
analyses: [id_ood_table, optimizer_ood_best]
"""


def test_leave_one_domain_out_end_to_end(tmp_path):
    path = tmp_path / "lodo.yml"
    path.write_text(LODO_STUDY)
    study = load_study(path)
    trials = study.trials()
    # val_env == test_env is skipped: per (sample, seed) one main run and two companions
    val_envs = sorted(dict(t.dataset_params)["val_env"] for t in trials)
    assert val_envs == [-1] * 4 + [0] * 4 + [1] * 4
    run_study(study, tmp_path / "store", workers=0, progress=False)
    ledger = store.read(tmp_path / "store", "lodo")
    # DomainBed's random search: a draw per (sample, trial seed), shared by the companions
    assert (ledger["search.hparams"] == "per_seed").all()
    lrs = ledger.groupby(["sample", "seed"])["hp.lr"].nunique()
    assert (lrs == 1).all() and ledger["hp.lr"].nunique() == 4
    # so the training-domain pick is made within each trial seed, among that seed's draws
    chosen = select(ledger, "training_domain").iloc[0]
    for seed, sample in zip((0, 1), chosen["sample"].split(",")):
        mains = selected_checkpoints(ledger, "training_domain")
        mine = mains[mains["seed"] == seed].sort_values(["val_score", "sample"])
        assert str(mine["sample"].iloc[-1]) == sample
    companion = ledger[ledger["ds.val_env"] == 0]
    # a companion trains on env 1 only: env 0 is evaluated whole, as env 2 (the test env)
    assert companion["env0_acc"].notna().all() and companion["env1_acc"].isna().all()
    picked = selected_checkpoints(ledger, "leave_one_domain_out")
    assert len(picked) == 4 and (picked["ds.val_env"] == -1).all()
    # the score of a main checkpoint, by hand: the mean of env<v>_in_acc of its companions
    main = picked.iloc[0]
    same = ledger[
        (ledger["sample"] == main["sample"])
        & (ledger["seed"] == main["seed"])
        & (ledger["step"] == main["step"])
    ]
    by_hand = np.mean([same.loc[same["ds.val_env"] == v, f"env{v}_in_acc"].item() for v in (0, 1)])
    assert main["val_score"] == pytest.approx(by_hand)
    report = Report(tmp_path / "report", "lodo")
    context = AnalysisContext(study, ledger, report)
    registry.analysis("id_ood_table").run(context)
    table = pd.read_csv(tmp_path / "report" / "id_ood_table.csv")
    assert {"training_domain", "leave_one_domain_out", "oracle"} <= set(table.columns)
    assert table["leave_one_domain_out"].notna().all() and len(table) == 1
