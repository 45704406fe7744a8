"""The measures study's table (shiftbench.studies.generalization_measures.measure_table) and
its plumbing: the ledger ->
one row per model with hyperparameter, measure and target columns (every number checked
against arithmetic on the synthetic ledger), environment names from the real data sets,
the ``measure_config`` study key, the runner passing it on, and CIFAR-10-C's ``shifts`` and
``train_size`` parameters."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_data_cifar import write_cifar

from shiftbench.measures.config import MeasureConfig
from shiftbench.plugins.files import load_module
from shiftbench.spec.study import StudyError, parse_study
from shiftbench.studies.generalization_measures import measure_table
from shiftbench.studies.generalization_measures.measure_table import EnvironmentInfo
from shiftbench.trials.runner import TrialRunner

ROOT = Path(__file__).resolve().parents[1]
SHIFTS = "rotate-30,color"


def synthetic_ledger() -> pd.DataFrame:
    """Eight done models (depth x lr x 2 seeds), each with an early and a final checkpoint,
    a retried trial whose first attempt must be ignored, a failed trial, and one model
    below 99% training accuracy."""
    rows = []
    rng = np.random.default_rng(0)
    k = 0
    for depth in (1, 2):
        for lr in (0.1, 0.2):
            for seed in (0, 1):
                k += 1
                final = {
                    "train_acc": 1.0 if k != 3 else 0.95,
                    "id_acc": 0.9 - 0.01 * k,
                    "env1_acc": 0.8 - 0.02 * k,
                    "env2_acc": 0.5 + 0.01 * k,
                    "measure.a": float(k),
                    "measure.b": float(rng.normal()),
                }
                common = {
                    "study": "s", "trial_id": f"t{k}", "attempt": 0, "status": "done",
                    "dataset": "shifted_digits", "ds.shifts": SHIFTS, "ds.test_env": 1,
                    "ds.holdout_fraction": 0.2, "ds.split_seed": 0, "obj.depth": depth,
                    "obj.width": 8, "obj.eval_every": 10, "solver": "sgd", "hp.lr": lr,
                    "hp.momentum": math.nan, "seed": seed, "train_loss": 0.01,
                }  # fmt: skip
                rows.append({**common, "step": 10, "train_acc": 0.5, "id_acc": 0.4})
                rows.append({**common, "step": 20, **final})
    rows.append({**rows[0], "attempt": 1, "status": "failed", "step": -1})  # t1 retried: failed
    rows.append({**rows[2], "attempt": 1, "step": 30, "train_acc": 1.0, "id_acc": 0.7})
    return pd.DataFrame(rows)


def fixed_names(dataset, params):
    assert dataset == "shifted_digits" and dict(params)["shifts"] == SHIFTS
    return EnvironmentInfo(("clean", "rotate-30", "color"), (100, 40, 40), 20)


def test_one_row_per_done_model_with_hparams_measures_and_targets():
    ledger = synthetic_ledger()
    table = measure_table.build(ledger, describe=fixed_names)
    frame = table.frame.set_index("trial_id")
    assert sorted(frame.index) == [f"t{k}" for k in range(2, 9)]  # t1's latest attempt failed
    assert table.hparams == ("obj.depth", "hp.lr")  # width/eval_every fixed, momentum absent
    assert table.measures == ("measure.a", "measure.b")
    assert table.shifts == ("rotate-30", "color")
    assert table.targets == (
        "gap_iid", "gap_ood_rotate-30", "gap_ood_color", "err_ood_rotate-30", "err_ood_color",
    )  # fmt: skip
    assert table.n_test == {
        "gap_iid": 20, "gap_ood_rotate-30": 40, "err_ood_rotate-30": 40,
        "gap_ood_color": 40, "err_ood_color": 40,
    }  # fmt: skip
    for k in range(3, 9):  # trial t2 is checked below: its retry is the row that counts
        row = frame.loc[f"t{k}"]
        train = 1.0 if k != 3 else 0.95
        assert row["step"] == 20 and row["measure.a"] == k
        assert row["gap_iid"] == pytest.approx(train - (0.9 - 0.01 * k))
        assert row["gap_ood_rotate-30"] == pytest.approx(train - (0.8 - 0.02 * k))
        assert row["err_ood_rotate-30"] == pytest.approx(1 - (0.8 - 0.02 * k))
        assert row["gap_ood_color"] == pytest.approx(train - (0.5 + 0.01 * k))
        assert row["converged"] == (k != 3)
    retried = frame.loc["t2"]
    assert retried["step"] == 30 and retried["gap_iid"] == pytest.approx(1.0 - 0.7)
    assert table.n_unconverged == 1
    assert "t3" not in set(table.models()["trial_id"])
    assert len(table.models(converged_only=False)) == 7


def test_unknown_environments_fall_back_to_index_names():
    table = measure_table.build(synthetic_ledger(), describe=lambda dataset, params: None)
    assert table.shifts == ("env1", "env2") and table.n_test == {}
    assert "gap_ood_env1" in table.frame


def test_shifted_digits_environments_are_read_from_the_data():
    info = measure_table.describe_environments(
        "shifted_digits",
        (("shifts", SHIFTS), ("test_env", 1), ("holdout_fraction", 0.2), ("split_seed", 0)),
    )
    n_train = int(1797 * 0.6)  # scikit-learn's 1,797 digits, 60% clean to train on
    assert info.names == ("clean", "rotate-30", "color")
    assert info.sizes == (n_train, 1797 - n_train, 1797 - n_train)
    assert info.n_id == int(n_train * 0.2)
    assert (
        measure_table.describe_environments("cifar10_c", (("data_home", "/nonexistent"),)) is None
    )


def test_wide_pivots_in_the_given_orders():
    long = pd.DataFrame(
        {"measure": ["measure.z", "measure.z", "measure.a", "measure.a"],
         "target": ["t2", "t1", "t2", "t1"], "tau": [1.0, 2.0, 3.0, 4.0]}
    )  # fmt: skip
    wide = measure_table.wide(long, "tau", ("t1", "t2"))
    assert wide.columns.tolist() == ["measure", "t1", "t2"]
    assert wide.values.tolist() == [["z", 2.0, 1.0], ["a", 4.0, 3.0]]


def study(**extra) -> dict:
    return {
        "name": "m",
        "datasets": {"colored_digits": {"test_env": [2]}},
        "objective": {"steps": 2, "eval_every": 1, "model": "mlp", "width": 8},
        "solvers": {"sgd": {}},
        "measures": ["params"],
        **extra,
    }


@pytest.mark.parametrize(
    "section, good, parsed, default, bad",
    [
        (
            "measure_config",
            {"subset": 64, "accuracy_drop": 0.05},
            MeasureConfig(subset=64, accuracy_drop=0.05),
            MeasureConfig(),
            [
                ({"subsets": 1}, "measure_config.subsets: unknown key"),
                ({"subset": "all"}, "measure_config.subset: expected int"),
                ({"mc_draws": 0}, "measure_config: MeasureConfig.mc_draws must be >= 1"),
            ],
        ),
        (
            "score_config",
            {"min_ess": 4, "quantile": "empirical"},
            {"min_ess": 4, "quantile": "empirical"},
            {},
            [
                ({"ess": 1}, "score_config.ess: unknown key"),
                ({"min_ess": "12"}, "score_config.min_ess: expected float"),
                ({"min_ess": 0}, "score_config: ScoreConfig.min_ess must be > 0"),
            ],
        ),
    ],
)
def test_config_keys_are_validated(tmp_path, section, good, parsed, default, bad):
    path = tmp_path / "m.yml"
    reads = {"analyses": ["measures_kendall"]}  # score_config is the measures analyses' section
    assert getattr(parse_study(study(**{section: good}, **reads), path), section) == parsed
    assert getattr(parse_study(study(**reads), path), section) == default
    for value, key in bad:
        with pytest.raises(StudyError) as info:
            parse_study(study(**{section: value}, **reads), path)
        assert str(info.value).startswith(f"{path}: {key}") and "\n" not in str(info.value)


def test_a_section_no_analysis_of_the_study_reads_is_refused(tmp_path):
    """``score_config`` is declared by the analyses that read it (their ``SECTIONS``): a study
    without one of them gets a located error instead of settings nothing uses."""
    path = tmp_path / "m.yml"
    with pytest.raises(StudyError) as info:
        parse_study(study(score_config={"min_ess": 4}, analyses=["measures_overview"]), path)
    assert str(info.value) == (
        f"{path}: score_config: no analysis of this study reads it (analyses: measures_overview)"
    )
    with pytest.raises(StudyError, match=r"reads it \(analyses: none\)$"):
        parse_study(study(score_config={"min_ess": 4}), path)


def test_runner_passes_the_measure_config_to_the_measures(tmp_path):
    parsed = parse_study(study(measure_config={"seed": 3}), tmp_path / "m.yml")
    # parsed once into its one form, which the runner takes as it is
    assert parsed.measure_config == MeasureConfig(seed=3)
    trial = parsed.trials()[0]
    runner = TrialRunner({})
    done = runner.run(
        trial, "m", measures=("params", "mce_train"), measure_config=parsed.measure_config
    )
    assert done.status == "done" and done.rows[-1]["measure.params"] > 0
    # the settings every measure ran with are in the ledger: the study's, else the defaults
    last = done.rows[-1]
    assert last["measure_config.seed"] == 3
    assert (last["measure_config.bisection_depth"], last["measure_config.mc_draws"]) == (15, 10)
    defaults = runner.run(trial, "m", measures=("params",))
    assert defaults.rows[-1]["measure_config.seed"] == MeasureConfig().seed == 0


def test_cifar10_c_shifts_are_separate_test_environments(tmp_path):
    write_cifar(tmp_path, per_batch=4, n_test=6)
    cls = load_module(ROOT / "datasets" / "cifar10_c.py").Dataset
    make = lambda **p: cls.get_instance(data_home=str(tmp_path), **p).get_data()["data"]  # noqa: E731
    data = make(shifts="gaussian_noise-5, contrast-2", train_size=10)
    assert data.env_names == ["clean", "gaussian_noise-5", "contrast-2"]
    assert [len(e) for e in data.environments] == [10, 6, 6]
    assert data.training_indices == (0,)
    assert make().env_names == ["clean", "gaussian_noise-5"]  # the single-corruption default
    with pytest.raises(ValueError, match="shift 'fog-9'"):
        make(shifts="fog-9")
    with pytest.raises(ValueError, match=r"train_size must be in 1\.\.20"):
        make(train_size=21)


def test_runner_gives_the_measures_their_own_examples_and_records_the_sizes(tmp_path):
    spec = study(datasets={"shifted_digits": {"shifts": SHIFTS}}, measures=["nll_heldout"])
    trial = parse_study(spec, tmp_path / "m.yml").trials()[0]
    done = TrialRunner({}).run(trial, "m", measures=("nll_heldout",))
    last = done.rows[-1]
    # 1,078 clean digits: 20% IID test set, a disjoint 20% for the measures, the rest trained on
    assert (last["n_iid_test_examples"], last["n_measure_examples"]) == (215, 215)
    assert last["n_train_examples"] == 1078 - 2 * 215
    assert math.isfinite(last["measure.nll_heldout"])
