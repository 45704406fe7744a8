"""Plugins by name, and the one validation hook solvers, the objective and datasets share."""

from __future__ import annotations

import pytest

from shiftbench.plugins import registry


@pytest.mark.parametrize(
    ("kind", "name", "bad", "message"),
    [
        ("solver", "sgd", {"lr": -1.0}, "lr must be > 0"),
        ("solver", "rmsprop", {"eps": 0.0}, "eps"),
        ("dataset", "colored_mnist", {"source": "nowhere"}, "source must be one of"),
        ("objective", None, {"steps": 0}, "steps and eval_every must be >= 1"),
    ],
)
def test_one_hook_rejects_bad_values_of_every_kind(kind, name, bad, message):
    cls = {
        "solver": registry.solver_class,
        "dataset": registry.dataset_class,
        "objective": lambda _: registry.objective_class(),
    }[kind](name)
    good = registry.defaults(cls)
    registry.check_parameters(cls, good)
    with pytest.raises(ValueError, match=message):
        registry.check_parameters(cls, {**good, **bad})


def test_a_plugin_without_the_hook_accepts_anything():
    class Plain:
        parameters = {"x": [1]}

    registry.check_parameters(Plain, {"x": "anything"})
