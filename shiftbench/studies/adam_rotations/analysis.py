"""Slowdown under rotations (Zhang, Maes et al. 2025): how many more steps a rotated run
needs to reach the training loss the unrotated run ends with.

For each (task, solver, seed), a task being a data set and its model (``task_label``), the
run with ``rotation == "none"`` sets the target ``L*`` = its final training loss and ``S*`` =
the first checkpoint at which it reaches ``L*`` (its last step unless the loss went up at the
end). A rotated run's ``S`` is its
first checkpoint with loss <= ``L*``, linearly interpolated between checkpoints; the
slowdown is ``100 (S - S*) / S*`` percent, infinite when the run never gets there.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pandas as pd

from shiftbench.store import schema

RUN = ["task", "solver", "seed"]


def task_label(rows: pd.DataFrame) -> pd.Series:
    """Each row's task: its data set, and its model (``obj.model``) when the ledger has one."""
    if "obj.model" not in rows:
        return rows["dataset"].astype(str)
    return rows["dataset"].astype(str) + "/" + rows["obj.model"].astype(str)


def scope_label(rows: pd.DataFrame) -> pd.Series:
    """Each row's rotation as the report names it: its scope (``hp.rotation``), then the
    layer types it is restricted to (``global[attn]``) and its Haar block size (``global/64``)
    when the ledger holds several block sizes, so that such runs are never pooled."""
    label = rows["hp.rotation"].astype(str)
    if "hp.rotation_layers" in rows:
        layers = rows["hp.rotation_layers"]
        label = label.where(layers.isna(), label + "[" + layers.astype(str) + "]")
    if "hp.rotation_block_size" in rows and rows["hp.rotation_block_size"].nunique() > 1:
        size = rows["hp.rotation_block_size"]
        label = label.where(size.isna(), label + "/" + size.astype("Int64").astype(str))
    return label


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


def slowdowns(rows: pd.DataFrame, scope_column: str = "scope", at: float = 1.0) -> pd.DataFrame:
    """One row per rotated run: its scope, final loss, ``S``, the baseline's ``S*`` and the
    slowdown %. ``at`` < 1 takes as target the baseline's loss at its last checkpoint at or
    before that fraction of its steps (finite slowdowns up to ``1/at - 1`` for short runs).
    The slowdown is NaN when the baseline never gets below its initial loss (it did not
    train, so there is no speed to compare)."""
    if not 0 < at <= 1:
        raise ValueError(f"at must be in (0, 1], got {at}")
    rows = rows[rows["step"] >= 0].sort_values("step")
    rows = rows.assign(task=task_label(rows))
    if scope_column == "scope":
        rows = rows.assign(scope=scope_label(rows))
    out = []
    for key, run in rows.groupby(RUN):
        base = run[run[scope_column] == "none"]
        if base.empty:
            continue
        target = float(base[base["step"] <= at * base["step"].max()]["train_loss"].iloc[-1])
        base_steps = steps_to_reach(base, target)
        for scope, curve in run.groupby(scope_column):
            steps = steps_to_reach(curve, target)
            out.append(
                {
                    **dict(zip(RUN, key)),
                    "scope": scope,
                    "initial_loss": float(curve["train_loss"].iloc[0]),
                    "final_loss": float(curve["train_loss"].iloc[-1]),
                    "target_loss": target,
                    "steps": steps,
                    "baseline_steps": base_steps,
                    "slowdown_pct": (
                        100.0 * (steps - base_steps) / base_steps if base_steps > 0 else math.nan
                    ),
                }
            )
    return pd.DataFrame(out)


SCOPE_ORDER = ["none", "output", "input", "layer", "global", "svd"]


def task_panels(frame: pd.DataFrame, width: float, height: float) -> tuple[Any, list]:
    """A figure with one subplot per (task, solver) of ``frame``, and for each its axes,
    title and rows."""
    import matplotlib.pyplot as plt

    panels = sorted(frame.groupby(["task", "solver"]).groups)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), height), squeeze=False)
    return fig, [
        (ax, f"{task} / {solver}", frame[(frame["task"] == task) & (frame["solver"] == solver)])
        for ax, (task, solver) in zip(axes[0], panels)
    ]


def probe_summary(
    rows: pd.DataFrame, columns: list[str], scope_column: str = "scope"
) -> pd.DataFrame:
    """Mean and std over seeds of the final checkpoint's ``measure.<column>`` values, one row
    per (task, solver, scope) in ``SCOPE_ORDER``; columns ``<column>_mean``/``_std``."""
    final = schema.with_status(rows, schema.DONE).sort_values("step").groupby("trial_id").tail(1)
    final = final.assign(task=task_label(final))
    if scope_column == "scope":
        final = final.assign(scope=scope_label(final))
    present = [c for c in columns if schema.MEASURE + c in final]
    names = {schema.MEASURE + c: c for c in present}
    final = final.rename(columns={**names, scope_column: "scope"})
    if final.empty or not present:
        return pd.DataFrame()
    summary = final.groupby(["task", "solver", "scope"])[present].agg(["mean", "std"])
    summary.columns = [f"{column}_{stat}" for column, stat in summary.columns]
    summary = summary.reset_index()
    return sort_scopes(summary)


def sort_scopes(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` sorted by task, solver and scope, scopes in ``SCOPE_ORDER`` (a label such as
    ``global[attn]`` or ``global/64`` after its scope, then by name)."""
    rank = {s: i for i, s in enumerate(SCOPE_ORDER)}
    base = frame["scope"].str.split(r"[\[/]", regex=True).str[0]
    order = frame.assign(_rank=base.map(rank), _label=frame["scope"])
    order = order.sort_values(["task", "solver", "_rank", "_label"])
    return order.drop(columns=["_rank", "_label"])


PAPER_ORDER = ["output", "input", "layer", "global"]


TIE = 0.01  # nats of final training loss: a smaller difference is no ordering
UNTRAINED = 0.95  # a run whose final loss is >= this fraction of its initial loss did not train


def vacuous(summary: pd.DataFrame, scopes: list[str], ties: bool = True) -> str | None:
    """Why comparing ``scopes`` by final loss says nothing, or None: the unrotated run did not
    train (final loss >= ``UNTRAINED`` x its initial loss), every scope saturated (final
    losses all under ``TIE`` nats), or the final losses of all scopes span no more than
    sqrt(2) x their largest std over seeds, nor more than ``TIE`` (a tie: no ordering either
    holds or fails; only with ``ties``: a two-way comparison that ties is a finding)."""
    by_scope = summary.set_index("scope")
    final = by_scope.loc[scopes, "final_loss_mean"]
    if "initial_loss_mean" in by_scope and "none" in scopes:
        start, end = (
            by_scope.loc["none", "initial_loss_mean"],
            by_scope.loc["none", "final_loss_mean"],
        )
        if end >= UNTRAINED * start:
            return f"the unrotated run did not train (loss {start:.3f} -> {end:.3f})"
    if (final < TIE).all():
        return f"every scope saturated (final losses all under {TIE} nats)"
    sd = math.sqrt(2) * float(by_scope.loc[scopes, "final_loss_std"].fillna(0).max())
    if ties and final.max() - final.min() <= max(sd, TIE):
        return (
            f"all {len(scopes)} scopes tie (final losses {final.min():.3f}-{final.max():.3f}, "
            f"a spread within {sd:.3f})"
        )
    return None


def invariance_verdict(summary: pd.DataFrame) -> str:
    """For a rotation-equivariant optimizer (SGD): whether its rotated runs end within one
    pooled std (or ``TIE``) of the unrotated one, said as vacuous when it did not train. A
    single seed has no std: it counts as 0."""
    by_scope = summary.set_index("scope")
    scopes = [s for s in SCOPE_ORDER if s in by_scope.index]
    if "none" not in scopes or len(scopes) < 2:
        return "not enough scopes to judge"
    start = by_scope.loc["none"].get("initial_loss_mean", math.inf)
    end = by_scope.loc["none", "final_loss_mean"]
    if end >= UNTRAINED * start:
        return (
            f"vacuous: the unrotated run did not train (loss {start:.3f} -> {end:.3f}), so its "
            "invariance is not tested"
        )
    parts = []
    for scope in scopes[1:]:
        d = by_scope.loc[scope, "final_loss_mean"] - end
        sd = float(np.hypot(*np.nan_to_num(by_scope.loc[["none", scope], "final_loss_std"])))
        same = abs(d) <= max(sd, TIE)
        parts.append(f"{scope} {'matches' if same else 'differs from'} none ({d:+.3f} nats)")
    return "invariance: " + ", ".join(parts)


def ordering_verdict(summary: pd.DataFrame) -> str:
    """Whether one task's Adam runs follow Zhang, Maes et al.'s ordering, by a stated rule.

    ``summary`` has one row per scope with ``final_loss_mean`` and ``final_loss_std`` (over
    seeds), and ``initial_loss_mean`` when known. The ordering none ~ output <= input <=
    layer <= global holds when no scope in that chain ends more than one (pooled) standard
    deviation *below* the scope before it, and none and output are within one standard
    deviation; SVD helps when its final loss is more than one standard deviation below the
    unrotated run's. Differences under ``TIE`` nats count as ties whatever the spread. A
    comparison that cannot tell (``vacuous``: untrained baseline, saturated losses, all
    scopes tied) is said to be vacuous instead of given a verdict.
    """
    by_scope = summary.set_index("scope")

    def gap(a: str, b: str) -> tuple[float, float]:
        mean = by_scope.loc[b, "final_loss_mean"] - by_scope.loc[a, "final_loss_mean"]
        sd = float(np.hypot(*np.nan_to_num(by_scope.loc[[a, b], "final_loss_std"])))
        return float(mean), max(sd, TIE)

    parts = []
    chain_scopes = ["none", *PAPER_ORDER]
    if set(chain_scopes) <= set(by_scope.index) and (why := vacuous(summary, chain_scopes)):
        parts.append(f"the ordering none ~ output <= input <= layer <= global is vacuous: {why}")
    elif set(chain_scopes) <= set(by_scope.index):
        chain = [gap(a, b) for a, b in itertools.pairwise(PAPER_ORDER)]
        near, near_sd = gap("none", "output")
        holds = all(d >= -sd for d, sd in chain) and abs(near) <= near_sd
        parts.append(
            f"the ordering none ~ output <= input <= layer <= global "
            f"{'holds' if holds else 'does not hold'} (final losses "
            + ", ".join(
                f"{s} {by_scope.loc[s, 'final_loss_mean']:.3f}" for s in ["none", *PAPER_ORDER]
            )
            + ")"
        )
    if {"none", "svd"} <= set(by_scope.index) and (
        why := vacuous(summary, ["none", "svd"], ties=False)
    ):
        parts.append(f"the SVD comparison is vacuous: {why}")
    elif {"none", "svd"} <= set(by_scope.index):
        d, sd = gap("none", "svd")
        parts.append(
            f"SVD {'helps' if d < -sd else 'does not clearly help'} "
            f"(final loss {d:+.3f} vs none, one std {sd:.3f})"
        )
    return "; ".join(parts) if parts else "not enough scopes to judge"
