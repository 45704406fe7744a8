"""Slowdown under rotations (Zhang, Maes et al. 2025): how many more steps a rotated run
needs to reach the training loss the unrotated run ends with.

For each (task, solver, seed) the run with ``rotation == "none"`` sets the target
``L*`` = its final training loss and ``S*`` = the first checkpoint at which it reaches
``L*`` (its last step unless the loss went up at the end). A rotated run's ``S`` is its
first checkpoint with loss <= ``L*``, linearly interpolated between checkpoints; the
slowdown is ``100 (S - S*) / S*`` percent, infinite when the run never gets there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

RUN = ["dataset", "solver", "seed"]


def steps_to_reach(curve: pd.DataFrame, target: float) -> float:
    """First step (interpolated between checkpoints) at which ``train_loss <= target``."""
    steps = curve["step"].to_numpy(dtype=float)
    losses = curve["train_loss"].to_numpy(dtype=float)
    hits = np.flatnonzero(losses <= target)
    if hits.size == 0:
        return math.inf
    i = int(hits[0])
    if i == 0:
        return float(steps[0])
    s0, s1, l0, l1 = steps[i - 1], steps[i], losses[i - 1], losses[i]
    return float(s0 + (s1 - s0) * (l0 - target) / (l0 - l1)) if l0 != l1 else float(s1)


def slowdowns(rows: pd.DataFrame, scope_column: str = "hp.rotation") -> pd.DataFrame:
    """One row per rotated run: its scope, ``S``, the baseline's ``S*`` and the slowdown %."""
    rows = rows[rows["step"] >= 0].sort_values("step")
    out = []
    for key, run in rows.groupby(RUN):
        base = run[run[scope_column] == "none"]
        if base.empty:
            continue
        target = float(base["train_loss"].iloc[-1])
        base_steps = steps_to_reach(base, target)
        for scope, curve in run.groupby(scope_column):
            steps = steps_to_reach(curve, target)
            out.append(
                {
                    **dict(zip(RUN, key)),
                    "scope": scope,
                    "target_loss": target,
                    "steps": steps,
                    "baseline_steps": base_steps,
                    "slowdown_pct": 100.0 * (steps - base_steps) / base_steps,
                }
            )
    return pd.DataFrame(out)
