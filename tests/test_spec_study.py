"""Study files: the quickstart expands to the expected trials, and every bad input is one
located line (file and key), never another exception."""

import copy
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftbench.data.seeds import seed_hash
from shiftbench.plugins import registry
from shiftbench.spec.study import Study, StudyError, id_strings, in_study, load_study, parse_study
from shiftbench.training.loop import INERT
from shiftbench.trials.trial import Trial

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "benchmarks" / "quickstart.yml"
VALID = yaml.safe_load(QUICKSTART.read_text())
GRID = {
    "name": "g",
    "datasets": {"rotated_digits": {"test_env": [0, 1]}},
    "objective": {"steps": [10, 20]},
    "solvers": {"sgd": {"lr": [0.1, 0.01, 0.001]}, "adam": {"eps": 1e-7}},
    "search": {"kind": "grid"},
    "seeds": [0, 1],
}


def test_quickstart_expands_to_datasets_x_solvers_x_trials_x_seeds():
    study = load_study(QUICKSTART)
    raw = VALID
    trials = study.trials()
    expected = (
        len(raw["datasets"])
        * len(raw["solvers"])
        * raw["search"]["trials_per_solver"]
        * len(raw["seeds"])
    )
    assert expected == 2 * 6 * 3 * 2
    assert len(trials) == expected
    assert len({t.trial_id for t in trials}) == expected
    assert study.name == "quickstart" and study.seeds == (0, 1)
    assert study.analyses == ("id_ood_table", "id_ood_scatter")
    # every trial is fully resolved: defaults filled in, overrides applied
    for t in trials:
        solver_params = dict(t.solver_params)
        assert set(solver_params) == set(registry.solver_class(t.solver).parameters) - set(INERT)
        assert dict(t.objective_params)["steps"] == 300
        assert "seed" not in dict(t.objective_params)
        if t.solver in ("sgd",):
            assert 1e-2 <= solver_params["lr"] <= 1.0
        if t.solver in ("rmsprop", "adam", "adamw"):
            assert 1e-4 <= solver_params["lr"] <= 1e-2
    test_envs = {(t.dataset, dict(t.dataset_params)["test_env"]) for t in trials}
    assert test_envs == {("colored_digits", 2), ("rotated_digits", 0)}
    # loading twice gives the same trials in the same order
    assert [t.trial_id for t in load_study(QUICKSTART).trials()] == [t.trial_id for t in trials]


def test_grid_search_is_the_product_of_the_lists(tmp_path):
    trials = parse_study(copy.deepcopy(GRID), tmp_path / "g.yml").trials()
    assert len(trials) == 2 * 2 * (3 + 1) * 2
    assert len({t.trial_id for t in trials}) == len(trials)
    lrs = {dict(t.solver_params)["lr"] for t in trials if t.solver == "sgd"}
    assert lrs == {0.1, 0.01, 0.001}


def test_hyperparameters_without_effect_are_left_out_of_trial_ids(tmp_path):
    """The rotation settings, schedule and clipping are in a trial's config only where they
    act, so a trial without them has the id it had before they existed."""
    raw = {
        "name": "r",
        "datasets": {"rotated_digits": {"test_env": 0}},
        "solvers": {
            "sgd": {"lr": 0.1},
            "adam": {"rotation": ["global", "svd"], "max_grad_norm": [0.0, 1.0]},
        },
        "search": {"kind": "grid"},
        "seeds": [0],
    }
    trials = parse_study(raw, tmp_path / "r.yml").trials()
    by_solver = {(t.solver, dict(t.solver_params).get("rotation")): t for t in trials}
    sgd = dict(by_solver["sgd", "none"].solver_params)
    assert sgd == {"lr": 0.1, "weight_decay": 0.0, "batch_size": 64, "rotation": "none"}
    # the id of a plain SGD trial as it was computed before these hyperparameters existed (since
    # DomainBed's data seeds, irm_loss and the Adam reset joined the configs)
    assert by_solver["sgd", "none"].trial_id == "5b0e92dd29115484"
    params = [dict(t.solver_params) for t in trials if t.solver == "adam"]
    assert {(p["rotation"], p.get("rotation_block_size"), p.get("svd_every")) for p in params} == {
        ("global", 768, None),
        ("svd", None, 250),
    }
    assert sorted(p.get("max_grad_norm", 0.0) for p in params) == [0.0, 0.0, 1.0, 1.0]


def test_equal_configurations_are_one_trial(tmp_path):
    # A fully fixed random search draws the same configuration every time; a repeated grid
    # value is the same configuration twice: the ledger must get each trial once.
    # (With fixed data: by default each hyperparameter sample redraws its data, as DomainBed.)
    raw = {
        "name": "d",
        "datasets": {"colored_digits": {"test_env": [2, 2], "fixed_data": True}},
        "solvers": {"sgd": {"lr": 0.1, "weight_decay": 0.0, "batch_size": 32}},
        "search": {"trials_per_solver": 3},
        "seeds": [0, 1],
    }
    trials = parse_study(raw, tmp_path / "d.yml").trials()
    assert len(trials) == 2
    assert len({t.trial_id for t in trials}) == 2
    assert {t.seed for t in trials} == {0, 1}


def test_random_search_redraws_each_sample_per_trial_seed_as_domainbed(tmp_path):
    """DomainBed's scripts/train.py draws sample ``hparams_seed`` anew for every trial seed
    (``seed_hash(hparams_seed, trial_seed)``); its leave-one-domain-out runs (test_envs [t, v])
    share the main run's draw. ``hparams: shared`` is the old single draw per sample."""
    raw = {
        "name": "d",
        "datasets": {"colored_digits": {"test_env": [2], "val_env": [-1, 0, 1]}},
        "solvers": {"adam": {}},
        "search": {"trials_per_solver": 3},
        "seeds": [0, 1],
    }
    study = parse_study(copy.deepcopy(raw), tmp_path / "d.yml")
    assert study.hparams_draw == "per_seed"
    assert study.search_columns() == {"search.hparams": "per_seed"}
    draws: dict[tuple[int, int], set] = {}
    for trial in study.trials():
        draws.setdefault((trial.sample, trial.seed), set()).add(trial.solver_params)
    assert len(draws) == 6
    # companions (val_env 0, 1) and the main run share their (sample, trial seed) draw
    assert all(len(d) == 1 for d in draws.values())
    # and every (sample, trial seed) has its own
    assert len({next(iter(d)) for d in draws.values()}) == 6
    # a companion's data is DomainBed's run with test_envs [t, v] (v = 0 included)
    for trial in study.trials():
        params = dict(trial.dataset_params)
        test_envs = sorted({2, params["val_env"]} - {-1})
        expected = domainbed_seed_hash("ColoredDigits", "ERM", test_envs, trial.sample, trial.seed)
        assert params["data_seed"] == expected
    raw["search"]["hparams"] = "shared"
    shared = parse_study(raw, tmp_path / "s.yml")
    by_sample: dict[int, set] = {}
    for trial in shared.trials():
        by_sample.setdefault(trial.sample, set()).add(trial.solver_params)
    assert all(len(d) == 1 for d in by_sample.values()) and len(by_sample) == 3
    assert shared.search_columns() == {"search.hparams": "shared"}
    assert parse_study(copy.deepcopy(GRID), tmp_path / "g.yml").search_columns() == {}


def domainbed_seed_hash(*args):
    """DomainBed's ``misc.seed_hash``, written out: md5 of ``str(args)``, mod 2**31."""
    return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % 2**31


def test_data_seeds_follow_the_trial_as_in_domainbed(tmp_path):
    raw = {
        "name": "d",
        "datasets": {"colored_digits": {"test_env": [2]}},
        "objective": {"algorithm": "irm"},
        "solvers": {"sgd": {}},
        "search": {"trials_per_solver": 2},
        "seeds": [0, 3],
    }
    trials = parse_study(raw, tmp_path / "d.yml").trials()
    assert len(trials) == 4
    for trial in trials:
        params = dict(trial.dataset_params)
        # DomainBed's sweep.py: seed_hash(dataset, algorithm, test_envs, hparams_seed, trial_seed)
        expected = domainbed_seed_hash("ColoredDigits", "IRM", [2], trial.sample, trial.seed)
        assert params["data_seed"] == expected and params["split_seed"] == trial.seed
        assert params["fixed_data"] is False
    # values printed by DomainBed's own domainbed.lib.misc.seed_hash
    assert seed_hash("ColoredMNIST", "ERM", [2], 0, 0) == 1563456041
    assert seed_hash("RotatedMNIST", "IRM", [0, 3], 5, 2) == 119755905
    assert seed_hash(0, 1) == 1514274641
    fixed = {**raw, "datasets": {"colored_digits": {"fixed_data": True, "data_seed": 7}}}
    for trial in parse_study(fixed, tmp_path / "d.yml").trials():
        assert dict(trial.dataset_params)["data_seed"] == 7
        assert dict(trial.dataset_params)["split_seed"] == 0


def test_a_seed_given_without_fixed_data_is_refused(tmp_path):
    raw = {"name": "d", "datasets": {"colored_digits": {"data_seed": 3}}, "solvers": {"sgd": {}}}
    with pytest.raises(StudyError, match=r"datasets\.colored_digits\.data_seed.*fixed_data"):
        parse_study(raw, tmp_path / "d.yml")


def test_redrawn_data_differs_between_trials_and_is_reproducible():
    cls = registry.dataset_class("colored_digits")
    a = cls.get_instance(data_seed=1, split_seed=0).get_data()["data"]
    b = cls.get_instance(data_seed=2, split_seed=0).get_data()["data"]
    again = cls.get_instance(data_seed=1, split_seed=0).get_data()["data"]
    assert not torch.equal(a.environments[0].y, b.environments[0].y)
    assert torch.equal(a.environments[0].x, again.environments[0].x)
    # the hold-out split follows split_seed through DomainBed's seed_hash(trial_seed, env)
    _, out = a.splits()[1]
    perm = np.random.RandomState(domainbed_seed_hash(0, 1)).permutation(len(a.environments[1]))
    n_out = int(len(a.environments[1]) * 0.2)
    assert torch.equal(out.y, a.environments[1].y[perm[:n_out]])


def _write(tmp_path, raw, text=None):
    path = tmp_path / "study.yml"
    path.write_text(text if text is not None else yaml.safe_dump(raw, sort_keys=False))
    return path


def _mutated(change):
    raw = copy.deepcopy(VALID)
    change(raw)
    return raw


BAD = {
    "unknown top-level key": (lambda r: r.update(budget=3), "budget"),
    "empty top-level key": (lambda r: r.update({"": 3}), "'': unknown key"),
    "unknown dataset": (lambda r: r["datasets"].update(mnistt={}), "datasets.mnistt"),
    "unknown solver": (lambda r: r["solvers"].update(adagrad={}), "solvers.adagrad"),
    "unknown analysis": (lambda r: r.update(analyses=["id_ood_table", "nope"]), "analyses[1]"),
    "unknown measure": (lambda r: r.update(measures=["no_such_measure"]), "measures[0]"),
    "unknown dataset parameter": (
        lambda r: r["datasets"]["colored_digits"].update(flip=[0.1]),
        "datasets.colored_digits.flip",
    ),
    "unknown objective parameter": (
        lambda r: r["objective"].update(epochs=3),
        "objective.epochs",
    ),
    "unknown hyperparameter": (
        lambda r: r["solvers"]["sgd"].update(beta1=0.9),
        "solvers.sgd.beta1",
    ),
    "string lr": (lambda r: r["solvers"]["momentum"].update(lr="0.1"), "solvers.momentum.lr"),
    "string steps": (lambda r: r["objective"].update(steps="300"), "objective.steps"),
    "null lr": (lambda r: r["solvers"]["sgd"].update(lr=None), "solvers.sgd.lr"),
    "empty solver grid": (lambda r: r["solvers"]["sgd"].update(lr=[]), "solvers.sgd.lr"),
    "empty dataset grid": (
        lambda r: r["datasets"]["colored_digits"].update(test_env=[]),
        "datasets.colored_digits.test_env",
    ),
    "empty objective grid": (lambda r: r["objective"].update(steps=[]), "objective.steps"),
    "empty objective variant list": (
        lambda r: r["datasets"]["colored_digits"].update(objective=[]),
        "datasets.colored_digits.objective",
    ),
    "bad parameter in an objective variant": (
        lambda r: r["datasets"]["colored_digits"].update(
            objective=[{"model": "cnn"}, {"model": "mlp", "widht": 8}]
        ),
        "datasets.colored_digits.objective[1].widht",
    ),
    "impossible objective variant": (
        lambda r: r["datasets"]["colored_digits"].update(
            objective=[{"model": "cnn"}, {"model": "mlp", "width": 0}]
        ),
        "datasets.colored_digits.objective",
    ),
    "negative fixed lr": (lambda r: r["solvers"]["momentum"].update(lr=-0.1), "solvers.momentum"),
    "negative lr in a list": (lambda r: r["solvers"]["sgd"].update(lr=[0.1, -0.1]), "sgd.lr"),
    "negative lr in a distribution": (
        lambda r: r["solvers"]["sgd"].update(lr={"uniform": [-1.0, 1.0]}),
        "solvers.sgd.lr",
    ),
    "negative loguniform bound": (
        lambda r: r["solvers"]["adam"].update(lr={"loguniform": [-1.0, 1.0]}),
        "solvers.adam.lr",
    ),
    "unknown distribution": (
        lambda r: r["solvers"]["adam"].update(lr={"normal": [0.0, 1.0]}),
        "solvers.adam.lr",
    ),
    "distribution under grid search": (
        lambda r: r["search"].update(kind="grid"),
        "solvers.sgd.lr",
    ),
    "momentum >= 1": (lambda r: r["solvers"]["nesterov"].update(momentum=1.0), "nesterov"),
    "test_env out of range": (
        lambda r: r["datasets"]["rotated_digits"].update(test_env=[6]),
        "datasets.rotated_digits.test_env",
    ),
    "holdout fraction out of range": (
        lambda r: r["datasets"]["rotated_digits"].update(holdout_fraction=1.5),
        "datasets.rotated_digits.holdout_fraction",
    ),
    "duplicate seeds": (lambda r: r.update(seeds=[0, 1, 0]), "seeds"),
    "negative seed": (lambda r: r.update(seeds=[-1]), "seeds[0]"),
    "empty seeds": (lambda r: r.update(seeds=[]), "seeds"),
    "missing name": (lambda r: r.pop("name"), "name"),
    "bad name": (lambda r: r.update(name="two words"), "name"),
    "no solvers": (lambda r: r.pop("solvers"), "solvers"),
    "no datasets": (lambda r: r.update(datasets={}), "datasets"),
    "zero steps": (lambda r: r["objective"].update(steps=0), "objective"),
    "unknown model": (lambda r: r["objective"].update(model="no_such_net"), "objective"),
    "negative irm weight": (
        lambda r: r["objective"].update(algorithm="irm", irm_lambda=-1.0),
        "objective",
    ),
    "unknown search key": (lambda r: r["search"].update(budget=1), "search.budget"),
    "bad search kind": (lambda r: r["search"].update(kind="bayes"), "search.kind"),
    "zero trials": (lambda r: r["search"].update(trials_per_solver=0), "trials_per_solver"),
    "bad hyperparameter draw": (lambda r: r["search"].update(hparams="once"), "search.hparams"),
    "bad resources": (lambda r: r.update(resources={"gpus": -1}), "resources.gpus"),
    "negative retries": (lambda r: r.update(retries=-1), "retries"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_is_one_line_naming_file_and_key(tmp_path, case):
    change, key = BAD[case]
    path = _write(tmp_path, _mutated(change))
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert key in message


@pytest.mark.parametrize(
    "text, key",
    [
        ("name: x\ndatasets: {colored_digits: {}\n", "line"),
        ("name: x\n  solvers: [\n", "line"),
        ("", "(top level)"),
        ("- a\n- b\n", "(top level)"),
    ],
)
def test_invalid_or_empty_yaml(tmp_path, text, key):
    path = _write(tmp_path, None, text)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and key in message


def test_missing_file(tmp_path):
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "absent.yml")


def test_line_breaks_in_a_key_stay_on_one_line(tmp_path):
    with pytest.raises(StudyError) as info:
        parse_study(_mutated(lambda r: r.update({"bad\nkey": 1})), tmp_path / "s.yml")
    assert "\n" not in str(info.value) and "bad\\nkey" in str(info.value)


# --- fuzzing: mutate the valid study anywhere; only Study or a one-line StudyError --------

special = st.sampled_from(
    [None, 0, -1, 1, 2, 0.0, -1.0, 0.5, 1.0, float("nan"), float("inf"), "", "x", True, [], {}]
)
scalars = st.one_of(
    special,
    st.booleans(),
    st.integers(-3, 8),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["sgd", "adam", "cnn", "mlp", "grid", "random", "all", "erm", "irm"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-2, 2)), inner, max_size=3),
    ),
    max_leaves=6,
)
distributions = st.dictionaries(
    st.sampled_from(["uniform", "loguniform", "int_uniform", "log_one_minus", "choice", "x"]),
    st.one_of(st.lists(st.floats(-5, 5) | st.integers(-5, 5), max_size=3), scalars),
    min_size=1,
    max_size=2,
)
keys = st.one_of(
    st.sampled_from(
        [
            "name",
            "datasets",
            "objective",
            "solvers",
            "search",
            "seeds",
            "measures",
            "analyses",
            "retries",
            "resources",
            "test_env",
            "holdout_fraction",
            "steps",
            "eval_every",
            "model",
            "width",
            "depth",
            "dropout",
            "algorithm",
            "lr",
            "weight_decay",
            "batch_size",
            "momentum",
            "beta1",
            "eps",
            "kind",
            "trials_per_solver",
            "seed",
            "cpus",
            "gpus",
            "sgd",
            "adam",
            "rotated_digits",
        ]
    ),
    st.text(max_size=6),
    st.integers(-2, 2),
)


def _slots(node):
    """Every (container, key) pair in the nested study, dicts and lists alike."""
    items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
    for key, child in items:
        yield node, key
        if isinstance(child, dict | list):
            yield from _slots(child)


def _containers(node):
    yield node
    for container, key in _slots(node):
        if isinstance(container[key], dict | list):
            yield container[key]


@st.composite
def mutated_studies(draw):
    raw = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 2))):
        value = draw(st.one_of(special, scalars, values, distributions))
        op = draw(st.sampled_from(["replace", "replace", "drop", "insert"]))
        if op == "insert":
            node = draw(st.sampled_from(list(_containers(raw))))
            if isinstance(node, dict):
                node[draw(keys)] = value
            else:
                node.insert(draw(st.integers(0, len(node))), value)
            continue
        slots = list(_slots(raw))
        if not slots:
            continue
        node, key = draw(st.sampled_from(slots))
        if op == "drop":
            del node[key]
        else:
            node[key] = value
    return raw


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=mutated_studies())
def test_fuzzed_studies_give_a_study_or_a_one_line_study_error(raw):
    path = Path("benchmarks/fuzzed.yml")
    try:
        study = parse_study(raw, path)
    except StudyError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ")
        assert len(message.splitlines()) == 1
        return
    assert isinstance(study, Study)
    trials = study.trials()
    assert trials and len({t.trial_id for t in trials}) == len(trials)


def test_a_list_of_objective_variants_is_the_union_of_their_grids(tmp_path):
    """Two models on one data set, each with its own sizes: variants are unioned, and each
    variant is crossed with its own lists, never with the other variant's values."""
    raw = copy.deepcopy(VALID)
    raw["datasets"] = {
        "rotated_digits": {
            "objective": [
                {"model": "timm_vit", "depth": 2, "width": 64},
                {"model": "timm_resnet", "depth": 1, "width": [8, 16]},
            ]
        }
    }
    study = parse_study(raw, tmp_path / "variants.yml")
    sizes = sorted(
        {
            (o["model"], o["depth"], o["width"])
            for o in (dict(t.objective_params) for t in study.trials())
        }
    )
    assert sizes == [("timm_resnet", 1, 8), ("timm_resnet", 1, 16), ("timm_vit", 2, 64)]
    per_config = len(raw["solvers"]) * raw["search"]["trials_per_solver"] * len(raw["seeds"])
    assert len(study.trials()) == 3 * per_config
    steps = {dict(t.objective_params)["steps"] for t in study.trials()}
    assert steps == {VALID["objective"]["steps"]}  # the study's objective still applies


def test_the_trial_count_is_the_expansion_counted_without_building_it(tmp_path):
    variants = copy.deepcopy(VALID)
    variants["datasets"] = {
        "rotated_digits": {
            "test_env": [0, 1],
            "objective": [{"width": 64}, {"model": "cnn", "width": [8, 16]}],
        },
        "colored_digits": {},
    }
    for raw, factors in (
        (VALID, {"search.trials_per_solver": 3, "seeds": 2}),
        (
            variants,
            {
                "datasets.rotated_digits.test_env": 2,
                "datasets.rotated_digits.objective.width": 2,
                "search.trials_per_solver": 3,
                "seeds": 2,
            },
        ),
        (
            GRID,
            {
                "datasets.rotated_digits.test_env": 2,
                "objective.steps": 2,
                "solvers.sgd.lr": 3,
                "seeds": 2,
            },
        ),
    ):
        study = parse_study(copy.deepcopy(raw), tmp_path / "s.yml")
        count, named = study.trial_count()
        assert count == len(study.trials())
        assert dict(named) == factors


def test_a_study_over_its_trial_limit_is_refused_in_one_line_naming_the_keys(tmp_path):
    path = tmp_path / "s.yml"
    with pytest.raises(StudyError) as caught:
        parse_study({**copy.deepcopy(VALID), "trial_limit": 71}, path)
    assert str(caught.value) == (
        f"{path}: expands to 72 trials, over the limit of 71: search.trials_per_solver (3) x "
        "seeds (2); if that is meant, set trial_limit: 72 in the study or pass --trial-limit 72"
    )
    assert len(parse_study({**copy.deepcopy(VALID), "trial_limit": 72}, path).trials()) == 72
    assert len(parse_study({**copy.deepcopy(VALID), "trial_limit": 71}, path, 72).trials()) == 72
    with pytest.raises(StudyError, match="over the limit of 10"):
        parse_study(copy.deepcopy(VALID), path, trial_limit=10)
    with pytest.raises(StudyError, match="trial_limit: must be an integer >= 1"):
        parse_study({**copy.deepcopy(VALID), "trial_limit": 0}, path)


def test_val_env_out_of_range_is_refused(tmp_path):
    raw = {
        "name": "d",
        "datasets": {"colored_digits": {"val_env": [0, 3]}},
        "solvers": {"sgd": {}},
    }
    with pytest.raises(StudyError, match=r"datasets\.colored_digits\.val_env"):
        parse_study(raw, tmp_path / "d.yml")


EXPANSIONS = {
    "random search": {
        "name": "r",
        "datasets": {"colored_digits": {"test_env": [1, 2]}},
        "solvers": {"sgd": {"lr": {"loguniform": [0.01, 0.1]}}, "adam": {}},
        "search": {"kind": "random", "trials_per_solver": 3, "seed": 5},
        "seeds": [0, 1],
    },
    "dataset objective variants": {
        "name": "v",
        "datasets": {
            "colored_digits": {
                "test_env": [0, 2],
                "objective": [{"model": "mlp", "width": [8, 16]}, {"model": "cnn"}],
            },
            "rotated_digits": {"test_env": [0]},
        },
        "objective": {"steps": [10, 20]},
        "solvers": {"sgd": {"lr": [0.1, 0.01]}},
        "search": {"kind": "grid"},
        "seeds": [0, 3],
    },
    "val_env companions": {
        "name": "c",
        "datasets": {"colored_digits": {"test_env": [0, 1, 2], "val_env": [-1, 0, 1, 2]}},
        "solvers": {"adam": {"lr": [0.001, 0.01]}},
        "search": {"kind": "grid"},
        "seeds": [0, 1],
    },
    "repeated values, fixed data": {
        "name": "f",
        "datasets": {"colored_digits": {"test_env": [2, 2], "fixed_data": True}},
        "solvers": {"sgd": {"lr": 0.1}},
        "search": {"trials_per_solver": 3},
        "seeds": [0, 1],
    },
}


@pytest.mark.parametrize("raw", EXPANSIONS.values(), ids=EXPANSIONS.keys())
def test_trial_numbers_are_the_trials_ids_in_order_without_building_them(
    raw, tmp_path, monkeypatch
):
    study = parse_study(copy.deepcopy(raw), tmp_path / "s.yml")
    trials = study.trials()
    ids = [t.trial_id for t in trials]  # each hashes its own Trial.config_json
    assert len(set(ids)) == len(ids) > 1
    built = []
    monkeypatch.setattr(Trial, "make", lambda *a: built.append(a))
    assert id_strings(study.trial_numbers) == ids and built == []
    monkeypatch.undo()
    skip = set(study.trial_numbers[::2].tolist())
    assert [t.trial_id for t in study.iter_trials(skip)] == ids[1::2]


def test_in_study_is_set_membership_of_the_ids():
    rng = np.random.default_rng(0)
    numbers = rng.integers(0, 2**64 - 1, size=500, dtype=np.uint64, endpoint=True)
    ids = [*id_strings(numbers[::3]), "0" * 16, "f" * 16, *id_strings(numbers[:7] + 1)]
    members = set(id_strings(numbers))
    assert in_study(ids, numbers).tolist() == [tid in members for tid in ids]
    assert not in_study(ids, numbers[:0]).any() and in_study([], numbers).shape == (0,)
