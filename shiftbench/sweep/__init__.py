"""Running a study: planning what is pending (``planning``), driving the run and landing its rows
(``driver``), the in-process pool (``local``), the Ray pool (``ray_pool``), joining Ray
(``connect``), reruns (``rerun``), signal handling (``signals``), the persistent local
cluster (``cluster``) and GPU packing (``packing``).

The entry points are re-exported here: ``run_study``, ``plan``, ``rerun_trial``,
``result_differences`` and ``ClusterError``.
"""

from shiftbench.sweep.connect import ClusterError, start_ray
from shiftbench.sweep.driver import Summary, run_study
from shiftbench.sweep.planning import Plan, plan
from shiftbench.sweep.rerun import Rerun, rerun_trial, result_differences

__all__ = [
    "ClusterError",
    "Plan",
    "Rerun",
    "Summary",
    "plan",
    "rerun_trial",
    "result_differences",
    "run_study",
    "start_ray",
]
