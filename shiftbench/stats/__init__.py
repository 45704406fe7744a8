"""Public path of Study 2's statistics (Kendall tau, Psi, K, sign error, regret, intervals).

The code lives in :mod:`shiftbench.studies.generalization_measures.stats` and the modules by
concept it gathers; this module keeps ``shiftbench.stats.<function>`` working for notebooks
and scripts, with the names of that module's ``__all__``."""

from shiftbench.studies.generalization_measures import stats as _stats
from shiftbench.studies.generalization_measures.stats import *  # noqa: F403

__all__ = _stats.__all__
