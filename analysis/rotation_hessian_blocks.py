"""Table 1 of Zhang, Maes et al. (2025): how block-diagonal the Hessian is. Per task, optimizer
and rotation scope (the model each run trained; the Hessian in the standard basis), the share
of the Hessian's (1,1)-norm within one neuron, within one layer across neurons and across
layers (mean and std over seeds), and the mean |H_ij| of one entry of the layer and other
blocks relative to one entry of the neuron blocks (ratio of the means over seeds)."""

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.adam_rotations.analysis import probe_summary
from shiftbench.studies.adam_rotations.probes import HESSIAN_BLOCKS

SHARES = [f"hessian_{block}_share" for block in HESSIAN_BLOCKS]
MEANS = [f"hessian_{block}_mean" for block in HESSIAN_BLOCKS]


def run(context: AnalysisContext) -> None:
    summary = probe_summary(context.ledger, SHARES + MEANS)
    shown = [c for c in SHARES if f"{c}_mean" in summary]
    if not shown or summary[[f"{c}_mean" for c in shown]].isna().all().all():
        context.report.text("No run measured the Hessian's blocks (`hessian_<block>_share`).")
        return
    table = summary[["task", "solver", "scope"]].copy()
    for block in HESSIAN_BLOCKS:
        for stat in ("mean", "std"):
            column = f"hessian_{block}_share_{stat}"
            if column in summary:
                table[f"{block}_share_{stat}"] = summary[column]
    if "hessian_neuron_mean_mean" in summary:
        for block in ("layer", "other"):
            if f"hessian_{block}_mean_mean" in summary:
                ratio = summary[f"hessian_{block}_mean_mean"] / summary["hessian_neuron_mean_mean"]
                table[f"{block}_entry_vs_neuron_entry"] = ratio
    table = table.dropna(subset=[c for c in table if c.endswith("_share_mean")], how="all")
    context.report.table(
        "rotation_hessian_blocks",
        table,
        "Hessian block-diagonality (Table 1, standard basis): share of the (1,1)-norm within a "
        "neuron, within a layer across neurons and across layers; mean |H_ij| of one layer- or "
        "other-block entry relative to one neuron-block entry",
        digits=4,
    )
