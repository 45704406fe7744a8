"""Update orthogonality per layer type, per transformer matrix (Q, K, V, O, W1, W2) and
rotation scope (Zhang, Maes et al. 2025): the coefficient of variation of the singular values
of Adam's normalized update averaged over steps resumed from the final checkpoint (0 =
orthogonal), mean and std over seeds; kinds absent everywhere are left out."""

import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.adam_rotations.analysis import probe_summary, task_panels
from shiftbench.studies.adam_rotations.probes import LAYER_TYPES, MATRIX_ROLES

KINDS = [*LAYER_TYPES, *MATRIX_ROLES]
COLUMNS = [f"update_orthogonality_{kind}" for kind in KINDS]


def run(context: AnalysisContext) -> None:
    summary = probe_summary(context.ledger, COLUMNS)
    kinds = [k for k in KINDS if _measured(summary, f"update_orthogonality_{k}")]
    if not kinds:
        context.report.text("No run measured update orthogonality (Adam runs with the probes).")
        return
    means = [f"update_orthogonality_{k}_mean" for k in kinds]
    columns = [f"update_orthogonality_{k}_{stat}" for k in kinds for stat in ("mean", "std")]
    summary = summary[["task", "solver", "scope", *columns]].dropna(subset=means, how="all")
    summary.columns = [c.removeprefix("update_orthogonality_") for c in summary.columns]
    context.report.table(
        "rotation_orthogonality",
        summary,
        "Update orthogonality (singular-value CV of Adam's update) per layer type, per "
        "matrix role (q, k, v, o, w1, w2) and scope",
    )
    fig, panels = task_panels(summary, 5, 3.6)
    for ax, title, panel in panels:
        present = [k for k in kinds if panel[f"{k}_mean"].notna().any()]
        x = np.arange(len(panel))
        width = 0.8 / max(len(present), 1)
        for i, kind in enumerate(present):
            ax.bar(
                x + i * width, panel[f"{kind}_mean"], width, yerr=panel[f"{kind}_std"], label=kind
            )
        ax.set_xticks(x + 0.4 - width / 2, panel["scope"])
        ax.set(title=title, xlabel="rotation", ylabel="singular-value CV")
        ax.legend(fontsize=8, title="layer type / matrix")
        ax.grid(alpha=0.3, axis="y")
    context.report.figure(
        "rotation_orthogonality",
        fig,
        "Update orthogonality per layer type / matrix and rotation scope (mean, std over seeds)",
    )


def _measured(summary: pd.DataFrame, column: str) -> bool:
    """Whether some run has a value of the probe ``column``."""
    return f"{column}_mean" in summary and bool(summary[f"{column}_mean"].notna().any())
