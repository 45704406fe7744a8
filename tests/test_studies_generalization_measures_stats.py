"""Tests for shiftbench.studies.generalization_measures.stats: the score configuration and the
score table, against an independent computation or a property."""

from __future__ import annotations

import pytest
from studies_generalization_measures_grid import HPARAMS, grid

import shiftbench.stats
from shiftbench.studies.generalization_measures import (
    correlation,
    intervals,
    mutual_information,
    selection_scores,
    sign_error,
    stats,
)


def test_score_config_defaults_are_the_references() -> None:
    config = stats.ScoreConfig()
    assert (config.min_ess, config.quantile) == (12.0, "reference")
    with pytest.raises(ValueError, match=r"ScoreConfig\.quantile"):
        stats.ScoreConfig(quantile="linear")


# Score table


def test_score_table_rows_and_columns_agree_with_functions() -> None:
    df = grid(seeds=4)
    df["gap_ood"] = df["gap"] + 0.02 * df["noise"]
    table = stats.score_table(
        df, ["noise", "gap"], ["gap", "gap_ood"], HPARAMS, {"gap": 10_000, "gap_ood": 2_000}
    )
    assert len(table) == 4
    for column in ["tau", "psi", "psi_lr", "psi_depth", "psi_wd", "k", "sign_error_mean"]:
        assert column in table.columns
    for column in ["sign_error_p90", "sign_error_max", "regret", "hit_rate"]:
        assert column in table.columns
    row = table.set_index(["measure", "target"]).loc[("noise", "gap_ood")]
    assert row["tau"] == pytest.approx(stats.kendall_tau(df, "noise", "gap_ood"))
    assert row["k"] == pytest.approx(stats.conditional_mi(df, "noise", "gap_ood", HPARAMS).k)
    expected = stats.robust_sign_error(df, "noise", "gap_ood", HPARAMS, n_test=2_000)
    assert row["sign_error_mean"] == pytest.approx(expected.mean, nan_ok=True)
    oracle = table.set_index(["measure", "target"]).loc[("gap", "gap")]
    assert (oracle["tau"], oracle["psi"], oracle["k"], oracle["regret"]) == pytest.approx(
        (1.0, 1.0, 1.0, 0.0)
    )
    assert oracle["tau_b"] == pytest.approx(1.0)
    # a measure declared to run the other way selects its largest value: the worst model
    flipped = stats.score_table(df, ["gap"], ["gap"], HPARAMS, 10_000, directions={"gap": -1})
    assert flipped.loc[0, "regret"] == 1.0 and flipped.loc[0, "hit_rate"] == 0.0


def test_stats_keeps_every_score_of_the_modules_by_concept() -> None:
    """The analyses read ``stats.<name>`` and notebooks ``shiftbench.stats.<name>``: every
    public name of the score modules is there, the same object."""
    for module in (correlation, mutual_information, sign_error, selection_scores, intervals):
        public = [n for n in vars(module) if not n.startswith("_") and n.isupper()] + [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
        assert public, module.__name__
        for name in public:
            assert name in stats.__all__, (module.__name__, name)
            assert getattr(stats, name) is getattr(module, name)
            assert getattr(shiftbench.stats, name) is getattr(module, name)
