"""Search spaces: every distribution samples the right law in range, each hyperparameter has
its own stream (adding one never reshuffles the others), and bad declarations raise
SpaceError."""

import math

import numpy as np
import pytest
from scipy import stats

from shiftbench.spec.search import (
    Choice,
    Fixed,
    IntUniform,
    LogOneMinus,
    LogUniform,
    SpaceError,
    Uniform,
    grid_samples,
    parse_space,
    random_samples,
    stable_seed,
)

N = 2000
SCOPE = ("colored_digits", "sgd")
ALPHA = 1e-3  # the seeds are fixed, so these tests are deterministic; a wrong law fails by far


def draws(space, n=N, seed=0, name="h"):
    return np.array([s[name] for s in random_samples({name: space}, n, seed=seed, scope=SCOPE)])


def test_uniform_samples_are_uniform_on_the_interval():
    x = draws(Uniform(-2.0, 3.0))
    assert x.min() >= -2.0 and x.max() < 3.0
    assert stats.kstest(x, stats.uniform(loc=-2.0, scale=5.0).cdf).pvalue > ALPHA
    # and not some other law: the same draws are far from U(-2, 2)
    assert stats.kstest(x, stats.uniform(loc=-2.0, scale=4.0).cdf).pvalue < 1e-6


def test_log_of_loguniform_samples_is_uniform():
    x = draws(LogUniform(1e-4, 1e-1))
    assert x.min() >= 1e-4 and x.max() <= 1e-1
    logs = np.log(x)
    lo, hi = math.log(1e-4), math.log(1e-1)
    assert stats.kstest(logs, stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue > ALPHA
    # the samples themselves are not uniform on [1e-4, 1e-1]
    assert stats.kstest(x, stats.uniform(loc=1e-4, scale=1e-1 - 1e-4).cdf).pvalue < 1e-6


def test_log_one_minus_gives_one_minus_ten_to_a_uniform_exponent():
    x = draws(LogOneMinus(-3.0, -0.5))
    assert np.all(x >= 1 - 10**-0.5) and np.all(x <= 1 - 10**-3)
    exponent = np.log10(1.0 - x)
    assert stats.kstest(exponent, stats.uniform(loc=-3.0, scale=2.5).cdf).pvalue > ALPHA


def test_int_uniform_hits_every_integer_equally_often():
    x = draws(IntUniform(16, 20))
    assert all(isinstance(v, int) for v in x.tolist())
    values, counts = np.unique(x, return_counts=True)
    assert values.tolist() == [16, 17, 18, 19, 20]  # both ends included
    assert stats.chisquare(counts).pvalue > ALPHA


def test_choice_is_a_uniform_choice_and_fixed_is_constant():
    x = draws(Choice(("a", "b", "c")))
    values, counts = np.unique(x, return_counts=True)
    assert values.tolist() == ["a", "b", "c"]
    assert stats.chisquare(counts).pvalue > ALPHA
    assert set(draws(Fixed(0.5), n=50).tolist()) == {0.5}


def test_a_hyperparameter_is_independent_of_the_others():
    # Same distribution, two names: the streams differ and are uncorrelated.
    space = LogUniform(1e-3, 1.0)
    samples = random_samples({"a": space, "b": space}, N, seed=0, scope=SCOPE)
    a = np.log([s["a"] for s in samples])
    b = np.log([s["b"] for s in samples])
    assert not np.allclose(a, b)
    assert abs(stats.pearsonr(a, b).statistic) < 4 / math.sqrt(N)


def test_adding_a_hyperparameter_leaves_the_others_unchanged():
    before = random_samples({"lr": LogUniform(1e-3, 1.0)}, 20, seed=3, scope=SCOPE)
    after = random_samples(
        {"lr": LogUniform(1e-3, 1.0), "aaa": Uniform(0.0, 1.0), "zzz": IntUniform(1, 9)},
        20,
        seed=3,
        scope=SCOPE,
    )
    assert [s["lr"] for s in before] == [s["lr"] for s in after]
    # changing another hyperparameter's distribution leaves lr alone too
    other = random_samples(
        {"lr": LogUniform(1e-3, 1.0), "aaa": LogOneMinus(-3.0, -1.0)}, 20, seed=3, scope=SCOPE
    )
    assert [s["lr"] for s in other] == [s["lr"] for s in before]


def test_sample_i_does_not_depend_on_how_many_are_drawn():
    space = {"lr": LogUniform(1e-3, 1.0)}
    few = random_samples(space, 5, seed=1, scope=SCOPE)
    many = random_samples(space, 50, seed=1, scope=SCOPE)
    assert many[:5] == few


def test_search_seed_and_scope_change_the_samples():
    space = {"lr": LogUniform(1e-3, 1.0)}
    base = random_samples(space, 10, seed=0, scope=SCOPE)
    assert random_samples(space, 10, seed=0, scope=SCOPE) == base
    assert random_samples(space, 10, seed=1, scope=SCOPE) != base
    assert random_samples(space, 10, seed=0, scope=("colored_digits", "adam")) != base
    assert random_samples(space, 10, seed=0, scope=("rotated_digits", "sgd")) != base


def test_shared_draws_leave_the_hyperparameters_to_the_sample_alone(tmp_path):
    from shiftbench.spec.study import parse_study

    raw = {
        "name": "s",
        "datasets": {"colored_digits": {}},
        "solvers": {"adam": {}},
        "search": {"trials_per_solver": 3, "hparams": "shared"},
    }
    one = parse_study({**raw, "seeds": [0]}, tmp_path / "a.yml").trials()
    two = parse_study({**raw, "seeds": [7, 0, 11]}, tmp_path / "b.yml").trials()
    by_sample = {t.sample: t.solver_params for t in one}
    assert len(set(by_sample.values())) == 3
    for trial in two:
        assert trial.solver_params == by_sample[trial.sample]
    assert {t.trial_id for t in one} <= {t.trial_id for t in two}


def test_a_trial_seed_gives_its_own_draw_and_none_the_shared_one():
    space = {"lr": LogUniform(1e-3, 1.0), "wd": Uniform(0.0, 1.0)}
    shared = random_samples(space, 10, seed=0, scope=SCOPE)
    # without a trial seed: the generators seeded as before the per-seed draws existed
    assert shared == [
        {
            name: space[name].sample(np.random.default_rng(stable_seed(0, *SCOPE, name, i)))
            for name in sorted(space)
        }
        for i in range(10)
    ]
    per_seed = [random_samples(space, 10, seed=0, scope=SCOPE, trial_seed=s) for s in (0, 1)]
    assert per_seed[0] == random_samples(space, 10, seed=0, scope=SCOPE, trial_seed=0)
    for i in range(10):
        assert len({d[i]["lr"] for d in (shared, *per_seed)}) == 3


def test_stable_seed_is_a_63_bit_function_of_the_parts():
    seeds = {stable_seed(0, "a", "b", i) for i in range(100)}
    assert len(seeds) == 100 and all(0 <= s < 2**63 for s in seeds)
    assert stable_seed(0, "a", "b") == stable_seed(0, "a", "b")
    # the separator keeps part boundaries: ("ab", "c") is not ("a", "bc")
    assert stable_seed("ab", "c") != stable_seed("a", "bc")


@pytest.mark.parametrize(
    "spec, expected",
    [
        (0.5, Fixed(0.5)),
        ("adam", Fixed("adam")),
        ([1, 2], Choice((1, 2))),
        ({"choice": [1, 2]}, Choice((1, 2))),
        ({"uniform": [0, 1]}, Uniform(0.0, 1.0)),
        ({"loguniform": [1.0e-4, 1.0e-1]}, LogUniform(1e-4, 1e-1)),
        ({"int_uniform": [16, 128]}, IntUniform(16.0, 128.0)),
        ({"log_one_minus": [-3, -0.5]}, LogOneMinus(-3.0, -0.5)),
    ],
)
def test_parse_space_forms(spec, expected):
    assert parse_space(spec) == expected
    assert type(parse_space(spec)) is type(expected)


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"loguniform": [-1.0, 1.0]}, "positive"),
        ({"loguniform": [0.0, 1.0]}, "positive"),
        ({"uniform": [1.0, 1.0]}, "low < high"),
        ({"loguniform": [1.0, 1e-3]}, "low < high"),
        ({"log_one_minus": [-3, 1]}, "<= 0"),
        ({"normal": [0, 1]}, "unknown distribution"),
        ({"uniform": [0, 1], "loguniform": [1, 2]}, "one of"),
        ({"uniform": [0, 1, 2]}, "[low, high]"),
        ({"uniform": 1}, "[low, high]"),
        ({"uniform": ["a", 1]}, "numbers"),
        ({"uniform": [True, 2]}, "numbers"),
        ({"loguniform": [1e-3, float("inf")]}, "finite"),
        ({"uniform": [float("nan"), 1]}, "finite"),
        ([], "empty"),
        ({"choice": []}, "empty"),
        ({"choice": 5}, "list"),
    ],
)
def test_bad_spaces_raise_space_error(spec, words):
    with pytest.raises(SpaceError, match=None) as info:
        parse_space(spec)
    assert words in str(info.value)


def test_grid_is_the_full_factorial_and_continuous_spaces_have_no_grid():
    spaces = {"b": Choice((1, 2, 3)), "a": Fixed("x"), "c": Choice((True, False))}
    grid = list(grid_samples(spaces))
    assert len(grid) == 3 * 1 * 2
    assert {tuple(sorted(g.items())) for g in grid} == {
        (("a", "x"), ("b", b), ("c", c)) for b in (1, 2, 3) for c in (True, False)
    }
    with pytest.raises(SpaceError):
        list(grid_samples({"lr": LogUniform(1e-3, 1.0)}))
