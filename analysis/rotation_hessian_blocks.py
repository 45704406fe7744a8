"""How block-diagonal the Hessian is (Zhang, Maes et al. 2025, Sec. 4.1). Per task, optimizer
and rotation scope (the model each run trained; the Hessian in the standard basis): the share
of the Hessian's (1,1)-norm within one neuron, within one layer across neurons and across
layers (mean and std over seeds), and the mean |H_ij| of one entry of the layer and other
blocks relative to one entry of the neuron blocks (ratio of the means over seeds), the
magnitudes of the paper's Fig. 9; and, when measured, the paper's Table 1: each block's
contribution r_i[I] . dw to the change of a gradient coordinate along a random or the update
direction (mean over seeds, signed as the paper and in absolute value)."""

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.adam_rotations.analysis import probe_summary
from shiftbench.studies.adam_rotations.hessian import HESSIAN_BLOCKS

SHARES = [f"hessian_{block}_share" for block in HESSIAN_BLOCKS]
MEANS = [f"hessian_{block}_mean" for block in HESSIAN_BLOCKS]
CONTRIBUTIONS = [
    f"hessian_{block}_{kind}_{direction}"
    for direction in ("random", "update")
    for block in HESSIAN_BLOCKS
    for kind in ("contribution", "abs_contribution")
]
CONTRIBUTION_UNIT = 1e6  # the contributions of unit directions are of order 1e-6 on these models


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
        "Hessian block-diagonality (standard basis; the magnitudes of the paper's Fig. 9): share "
        "of the (1,1)-norm within a neuron, within a layer across neurons and across layers; "
        "mean |H_ij| of one layer- or other-block entry relative to one neuron-block entry",
        digits=4,
    )
    contributions = probe_summary(context.ledger, CONTRIBUTIONS)
    shown = [f"{c}_mean" for c in CONTRIBUTIONS if f"{c}_mean" in contributions]
    if shown and not contributions[shown].isna().all().all():
        table = contributions[["task", "solver", "scope", *shown]].dropna(subset=shown, how="all")
        table.columns = [c.removeprefix("hessian_").removesuffix("_mean") for c in table.columns]
        values = [c for c in table.columns if "contribution" in c]
        table[values] = table[values] * CONTRIBUTION_UNIT
        context.report.table(
            "rotation_hessian_contributions",
            table,
            "Table 1 of the paper (standard basis): contribution r_i[I] . dw of the neuron, "
            "layer and other blocks I of sampled Hessian rows r_i along a unit random direction "
            "or Adam's unit update direction dw, mean over rows, directions and seeds; signed "
            "(as the paper) and absolute (abs_contribution), "
            f"in units of {1 / CONTRIBUTION_UNIT:.0e}",
            digits=4,
        )
