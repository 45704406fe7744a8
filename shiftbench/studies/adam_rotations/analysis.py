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
from scipy import stats

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
CONFIDENCE = 0.95  # two-sided level of the intervals over seeds the verdicts rest on


def seed_interval(values: Any) -> tuple[float, float]:
    """The two-sided ``CONFIDENCE`` Student-t interval of the mean of ``values`` (one per seed;
    NaN dropped): mean +- t(n - 1) sd / sqrt(n), sd with ddof 1; NaN bounds under two values."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def summarize_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per scope of one task and solver's runs (``runs``: one row per seed and scope
    with ``final_loss`` and ``initial_loss``): mean and std over seeds, the ``seed_interval``
    of the mean final loss (``final_loss_low``/``_high``) and the number of seeds."""
    grouped = runs.groupby("scope")
    summary = grouped[["initial_loss", "final_loss"]].agg(["mean", "std"])
    summary.columns = ["_".join(c) for c in summary.columns]
    bounds = grouped["final_loss"].apply(seed_interval)
    summary["final_loss_low"] = bounds.str[0]
    summary["final_loss_high"] = bounds.str[1]
    summary["seeds"] = grouped.size()
    return summary.reset_index()


def paired_difference(runs: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """Final loss of scope ``b`` minus scope ``a`` over the seeds that ran both (one seed draws
    the same initialization and data order in every scope, so the difference is paired): its
    mean, ``seed_interval`` (``low``, ``high``) and number of seeds."""
    final = runs.pivot_table(index="seed", columns="scope", values="final_loss")
    diff = (final[b] - final[a]).dropna()
    low, high = seed_interval(diff)
    return {"mean": float(diff.mean()), "low": low, "high": high, "seeds": int(diff.size)}


def _direction(diff: dict[str, float]) -> int:
    """+1 when the paired difference is resolved above 0 (its interval excludes 0 and its mean
    exceeds ``TIE``), -1 when resolved below, 0 when not resolved."""
    if diff["low"] > 0 and diff["mean"] > TIE:
        return 1
    if diff["high"] < 0 and diff["mean"] < -TIE:
        return -1
    return 0


def _interval(diff: dict[str, float]) -> str:
    if math.isnan(diff["low"]):
        return f"{diff['mean']:+.3f} [no interval]"
    return f"{diff['mean']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]"


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


def invariance_verdict(runs: pd.DataFrame) -> str:
    """For a rotation-equivariant optimizer (SGD), from one row per seed and scope of one task
    (``final_loss``, ``initial_loss``): whether each rotated scope ends where the unrotated run
    does, by the ``paired_difference`` of their final losses over seeds: it matches unless its
    interval excludes 0 by more than ``TIE``. Vacuous when the unrotated run did not train."""
    summary = summarize_runs(runs).set_index("scope")
    scopes = [s for s in SCOPE_ORDER if s in summary.index]
    if "none" not in scopes or len(scopes) < 2:
        return "not enough scopes to judge"
    start, end = summary.loc["none", ["initial_loss_mean", "final_loss_mean"]]
    if end >= UNTRAINED * start:
        return (
            f"vacuous: the unrotated run did not train (loss {start:.3f} -> {end:.3f}), so its "
            "invariance is not tested"
        )
    parts = []
    for scope in scopes[1:]:
        diff = paired_difference(runs, "none", scope)
        verb = "matches" if _direction(diff) == 0 else "differs from"
        parts.append(f"{scope} {verb} none ({_interval(diff)} nats over {diff['seeds']} seeds)")
    return "invariance: " + ", ".join(parts)


def ordering_verdict(runs: pd.DataFrame) -> str:
    """Whether one task's Adam runs follow Zhang, Maes et al.'s ordering (Sec. 3.1, Fig. 1:
    none ~ output <= input <= layer <= global; Sec. 3.2: SVD helps), by a stated rule on
    intervals over seeds.

    ``runs`` has one row per seed and scope with ``final_loss`` and ``initial_loss``. Each
    step of the chain is the ``paired_difference`` of final losses over seeds, with its
    ``CONFIDENCE`` interval: a step is reversed when its interval lies below 0 (and its mean
    below -``TIE``), resolved when above 0 (mean above ``TIE``), else unresolved. The ordering
    holds when no step of output <= input <= layer <= global is reversed and output is not
    resolved worse than none (the paper: no degradation under output-wise rotations); the
    verdict says how many steps are resolved. SVD helps when svd - none is resolved below 0.
    A comparison that cannot tell (``vacuous``: untrained baseline, saturated losses, all
    scopes tied) is said to be vacuous instead of given a verdict.
    """
    summary = summarize_runs(runs)
    present = set(summary["scope"])
    parts = []
    chain_scopes = ["none", *PAPER_ORDER]
    if set(chain_scopes) <= present and (why := vacuous(summary, chain_scopes)):
        parts.append(f"the ordering none ~ output <= input <= layer <= global is vacuous: {why}")
    elif set(chain_scopes) <= present:
        steps = {
            f"{b}-{a}": paired_difference(runs, a, b) for a, b in itertools.pairwise(PAPER_ORDER)
        }
        near = paired_difference(runs, "none", "output")
        reversed_steps = [name for name, diff in steps.items() if _direction(diff) < 0]
        broken = (["output-none"] if _direction(near) > 0 else []) + reversed_steps
        resolved = sum(_direction(diff) > 0 for diff in steps.values())
        if broken:
            head = "does not hold (" + ", ".join(broken) + " resolved the wrong way)"
        else:
            head = f"holds ({resolved} of {len(steps)} steps resolved upward, none reversed)"
        intervals = ", ".join(
            f"{name} {_interval(diff)}" for name, diff in {"output-none": near, **steps}.items()
        )
        parts.append(
            f"the ordering none ~ output <= input <= layer <= global {head}; paired "
            f"differences of final loss over {near['seeds']} seeds, mean "
            f"[{CONFIDENCE:.0%} interval]: {intervals}"
        )
    if {"none", "svd"} <= present and (why := vacuous(summary, ["none", "svd"], ties=False)):
        parts.append(f"the SVD comparison is vacuous: {why}")
    elif {"none", "svd"} <= present:
        diff = paired_difference(runs, "none", "svd")
        verb = {-1: "helps", 0: "does not clearly help", 1: "hurts"}[_direction(diff)]
        parts.append(f"SVD {verb} (svd-none {_interval(diff)} over {diff['seeds']} seeds)")
    return "; ".join(parts) if parts else "not enough scopes to judge"
