"""Kendall's tau and the granulated Kendall coefficient Psi (Jiang et al. 2020, Eq. 2-3) of
every measure against the generalization gap, in distribution and under each shift, over
the converged models; a heat map of tau by measure and shift. tau is Jiang's (no tie
correction); tau-b is a labelled extra table. Jiang et al.'s Table 1 layout (psi per
hyperparameter, Psi and tau for the IID gap), and Nakai et al.'s comparison of measure
families across shifts (the mean tau of each family's measures per target, table and
figure). tau, Psi and every psi_h come with jackknife intervals over the seeds."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from shiftbench.report.build import AnalysisContext
from shiftbench.studies.generalization_measures import measure_table, stats

# the study-file section this analysis reads, checked by the study file's checker
SECTIONS = {"score_config": stats.ScoreConfig}


def scores(
    table: measure_table.MeasureTable, config: stats.ScoreConfig | None = None
) -> pd.DataFrame:
    """Long table: measure, target, tau_b, tau (Jiang's), psi and psi_<h> for each varied
    hyperparameter, tau and each psi with its jackknife interval over the seeds (``*_lo``,
    ``*_hi``; `shiftbench.stats.jackknife_cis`: leaving a seed out keeps every pair of
    models distinct, where a bootstrap would duplicate models into ties, and psi_h averages
    groups that hold the seed fixed, so a seed's groups leave together)."""
    config = config or stats.ScoreConfig()
    models = table.models()
    names = ["tau", "psi", *(f"psi_{h.split('.', 1)[-1]}" for h in table.hparams)]

    def psi(d: pd.DataFrame, measure: str, target: str) -> list[float]:
        result = stats.granulated_kendall(d, measure, target, table.hparams)
        tau = stats.kendall_tau(d, measure, target)
        return [tau, result.psi, *(result.per_hparam[h] for h in table.hparams)]

    rows = []
    for measure in table.measures:
        for target in table.gap_targets:
            values = psi(models, measure, target)
            lo, hi = stats.jackknife_cis(
                models, lambda d, m=measure, t=target: psi(d, m, t), confidence=config.confidence
            )
            rows.append(
                {
                    "measure": measure,
                    "target": target,
                    "tau_b": stats.kendall_tau_b(models, measure, target),
                    **{
                        f"{name}{end}": v[i]
                        for i, name in enumerate(names)
                        for end, v in (("", values), ("_lo", lo), ("_hi", hi))
                    },
                }
            )
    return pd.DataFrame(rows)


def heat_map(tau: pd.DataFrame) -> plt.Figure:
    """Measures (rows) x targets (columns), tau on a diverging scale from -1 to 1."""
    values = tau.drop(columns="measure").to_numpy(float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * values.shape[1], 0.6 + 0.22 * len(tau)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(np.arange(values.shape[1]), [_label(c) for c in tau.columns[1:]], rotation=60)
    ax.set_yticks(np.arange(len(tau)), tau["measure"], fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.5, label="Kendall tau with the gap")
    return fig


def family_table(long: pd.DataFrame, targets: tuple[str, ...]) -> pd.DataFrame:
    """Family x target: the mean of its measures' tau, each oriented by the measure's declared
    direction (a confidence's tau counts negated), and how many measures it has."""
    direction = long["measure"].map(measure_table.direction)
    frame = long.assign(
        family=long["measure"].map(measure_table.family), tau=long["tau"] * direction
    )
    table = frame.pivot_table(index="family", columns="target", values="tau", aggfunc="mean")
    table = table[list(targets)].rename(columns=_label)
    table.insert(0, "measures", frame.groupby("family")["measure"].nunique())
    return table.reset_index()


def family_figure(families: pd.DataFrame) -> plt.Figure:
    """One line per family: its mean tau with the IID gap, then with each shifted gap."""
    columns = families.columns[2:]
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(columns), 3.6), layout="constrained")
    for _, row in families.iterrows():
        ax.plot(range(len(columns)), row[columns].to_numpy(float), marker="o", label=row["family"])
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set(ylabel="mean Kendall tau with the gap", ylim=(-1, 1))
    ax.legend(fontsize=7, ncol=2)
    return fig


def _label(target: str) -> str:
    return "IID" if target == "gap_iid" else target.removeprefix("gap_ood_")


def run(context: AnalysisContext) -> None:
    table = measure_table.build(context.ledger)
    if len(table.models()) < 2 or not table.measures:
        context.report.text("Kendall tau: fewer than two converged models with measures.")
        return
    config = stats.ScoreConfig(**context.study.score_config)
    long = scores(table, config)
    tau = measure_table.wide(long, "tau", table.gap_targets)
    context.report.table(
        "measures_tau",
        tau,
        "Kendall tau (Jiang et al. Eq. 2, no tie correction) of each measure with the "
        "generalization gap (IID, shifts)",
    )
    context.report.table(
        "measures_tau_intervals",
        long[["measure", "target", "tau", "tau_lo", "tau_hi"]].assign(
            measure=long["measure"].map(measure_table.short)
        ),
        f"Kendall tau with its {config.confidence:.0%} jackknife interval over seeds, per "
        "measure and target",
    )
    context.report.table(
        "measures_tau_b",
        measure_table.wide(long, "tau_b", table.gap_targets),
        "Extra: Kendall tau-b (tie-corrected) of each measure with the generalization gap",
    )
    context.report.table(
        "measures_psi",
        measure_table.wide(long, "psi", table.gap_targets),
        "Granulated Kendall Psi of each measure with the generalization gap (IID, shifts)",
    )
    context.report.table(
        "measures_psi_components",
        long.drop(columns=["tau", "tau_lo", "tau_hi", "tau_b"]).assign(
            measure=long["measure"].map(measure_table.short)
        ),
        "Granulated Kendall: Psi and psi_h per varied hyperparameter h, per measure and target, "
        f"with {config.confidence:.0%} jackknife intervals over seeds (_lo, _hi)",
    )
    context.report.figure("measures_tau_heatmap", heat_map(tau), "Kendall tau, measure x shift")
    iid = long[long["target"] == "gap_iid"].drop(columns=["target", "tau_b"])
    psi_columns = [f"psi_{h.split('.', 1)[-1]}" for h in table.hparams]
    context.report.table(
        "measures_psi_jiang",
        iid[["measure", *psi_columns, "psi", "psi_lo", "psi_hi", "tau"]].assign(
            measure=iid["measure"].map(measure_table.short)
        ),
        "IID gap in Jiang et al.'s Table 1 layout: psi per hyperparameter, Psi with its "
        f"{config.confidence:.0%} jackknife interval over seeds, and tau (psi_h intervals: "
        "measures_psi_components)",
    )
    families = family_table(long, table.gap_targets)
    context.report.table(
        "measures_families_tau",
        families,
        "Measure families across shifts: mean Kendall tau of the family's measures per target "
        "(each oriented by its declared direction)",
    )
    context.report.figure(
        "measures_families_tau", family_figure(families), "Measure families across shifts"
    )
