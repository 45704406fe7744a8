"""The histogram of Adam's second moments v per rotation scope (Zhang, Maes et al. 2025: a
global rotation concentrates v, flattening Adam's per-coordinate step sizes): the fraction of
positive entries of v per decade at the final checkpoint, in each run's own basis, mean over
seeds, one panel per task and optimizer."""

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.adam_rotations.analysis import probe_summary, task_panels

DECADES = list(range(-20, 0))
COLUMNS = [f"adam_v_decade_m{-k}" for k in DECADES]


def run(context: AnalysisContext) -> None:
    summary = probe_summary(context.ledger, COLUMNS)
    means = [f"{c}_mean" for c in COLUMNS]
    if summary.empty or not set(means) <= set(summary) or summary[means].isna().all().all():
        context.report.text("No run measured Adam's second-moment histogram (`adam_v_decade_*`).")
        return
    summary = summary.dropna(subset=means, how="all")
    table = summary[["task", "solver", "scope"]].copy()
    for k, column in zip(DECADES, means):
        table[f"1e{k}"] = summary[column]
    context.report.table(
        "rotation_second_moments",
        table,
        "Fraction of Adam's positive second moments per decade [1e k, 1e k+1) and rotation "
        "scope (final checkpoint, each run's basis; the end decades take everything beyond)",
    )
    fig, panels = task_panels(summary, 4.5, 3.4)
    for ax, title, panel in panels:
        for _, row in panel.iterrows():
            ax.step(DECADES, [row[c] for c in means], where="post", label=row["scope"])
        ax.set(title=title, xlabel="log10 v (decade)", ylabel="fraction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="rotation")
    context.report.figure(
        "rotation_second_moments",
        fig,
        "Histogram of Adam's second moments per rotation scope (mean over seeds)",
    )
