"""The rotation-dependent assumptions of Zhang, Maes et al. (2025) against the rotation
scope: L-inf gradient bound, Hessian (1,1)-norm and Adam's second moments (log10 quantiles)
at the final checkpoint, in each run's own basis, next to its slowdown %; mean over seeds."""

import matplotlib.pyplot as plt

from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.adam_rotations.analysis import probe_summary, slowdowns

PROBES = [
    "linf_gradient_bound",
    "hessian_11_norm",
    "adam_v_log10_q10",
    "adam_v_log10_q50",
    "adam_v_log10_q90",
]


def run(context: AnalysisContext) -> None:
    summary = probe_summary(context.ledger, PROBES)
    shown = [p for p in PROBES if f"{p}_mean" in summary and summary[f"{p}_mean"].notna().any()]
    if not shown:
        context.report.text("No run measured the rotation probes (Adam runs with the probes).")
        return
    columns = [f"{p}_{stat}" for p in shown for stat in ("mean", "std")]
    summary = summary[["task", "solver", "scope", *columns]].dropna(
        subset=[f"{p}_mean" for p in shown], how="all"
    )
    slow = slowdowns(schema.with_status(context.ledger, *schema.FINISHED))
    if not slow.empty:
        mean = slow.groupby(["task", "solver", "scope"])["slowdown_pct"].mean()
        summary = summary.join(mean.rename("slowdown_pct"), on=["task", "solver", "scope"])
    context.report.table(
        "rotation_probes",
        summary,
        "Assumption probes per rotation scope (final checkpoint, optimizer's basis)",
        digits=4,
    )
    panels = sorted(summary.groupby(["task", "solver"]).groups)
    fig, axes = plt.subplots(1, len(shown), figsize=(3.8 * len(shown), 3.4), squeeze=False)
    for ax, probe in zip(axes[0], shown):
        for task, solver in panels:
            panel = summary[(summary["task"] == task) & (summary["solver"] == solver)]
            ax.errorbar(
                panel["scope"],
                panel[f"{probe}_mean"],
                yerr=panel[f"{probe}_std"],
                marker="o",
                capsize=3,
                label=f"{task} / {solver}",
            )
        ax.set(title=probe, xlabel="rotation")
        if not probe.startswith("adam_v"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    context.report.figure(
        "rotation_probes", fig, "Assumption probes per rotation scope (mean, std over seeds)"
    )
