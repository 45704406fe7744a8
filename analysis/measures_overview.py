"""The measures study's models and targets: how many models were trained, how many did not
reach 99% training accuracy (flagged, left out of every other measures_* analysis), and the
distribution of each target (generalization gaps and errors, IID and under each shift), after
the commands that reproduce the report: run it first in a study's ``analyses``. It also
states the data split behind the measures and the targets, the measure settings the
ledger records, and that AIC and BIC reduce to the parameter count under the cross-entropy
stopping rule (so they are not reported as findings of their own)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shiftbench.measures import core as measures
from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.generalization_measures import measure_table, stats
from shiftbench.studies.generalization_measures.measure_table import CONVERGED_ACC


def target_summary(table: measure_table.MeasureTable) -> pd.DataFrame:
    """One row per target over the converged models: count, mean, std, min, max and the
    number of test examples behind it."""
    models = table.models()
    rows = []
    for target in table.targets:
        values = models[target].dropna()
        rows.append(
            {
                "target": target,
                "n_models": len(values),
                "mean": values.mean(),
                "std": values.std(),
                "min": values.min(),
                "max": values.max(),
                "n_test": table.n_test.get(target),
            }
        )
    return pd.DataFrame(rows)


SPLIT_COLUMNS = {
    "n_train_examples": "trained on",
    "n_measure_examples": "for the *_heldout measures",
    "n_iid_test_examples": "IID test set (gap_iid)",
}


def settings(context: AnalysisContext) -> list[str]:
    """Sentences on the data split and the measure settings recorded in the ledger."""
    ledger = context.ledger
    lines = []
    split = [
        f"{int(ledger[c].dropna().iloc[0])} {what}"
        for c, what in SPLIT_COLUMNS.items()
        if c in ledger and ledger[c].notna().any()
    ]
    if split:
        lines.append("Clean data per model, three disjoint parts: " + ", ".join(split) + ".")
    config = {
        schema.unprefixed(schema.MEASURE_CONFIG, c): ledger[c].dropna().unique()
        for c in sorted(schema.columns(ledger, schema.MEASURE_CONFIG))
        if ledger[c].notna().any()
    }
    if config:
        default = measures.MeasureConfig()
        changed = [
            f"{k} {', '.join(f'{x:g}' for x in v)} (reference/default {getattr(default, k):g})"
            for k, v in config.items()
            if list(v) != [getattr(default, k)]
        ]
        lines.append(
            "Measure settings (ledger `measure_config.*`): "
            + ("the defaults (the reference's)" if not changed else "; ".join(changed))
            + "."
        )
    return lines


def information_criteria(table: measure_table.MeasureTable) -> str:
    """Why AIC and BIC are not findings under the stopping rule, with the evidence."""
    models = table.models()
    taus = [
        f"{name} {stats.kendall_tau(models, f'measure.{name}', 'measure.params'):.3f}"
        for name in ("aic", "bic")
        if f"measure.{name}" in models
    ]
    if "measure.params" not in models or not taus:
        return ""
    return (
        "AIC (2 omega - 2 log L) and BIC (omega log m - 2 log L) are not findings of their "
        "own: every model stops at the same training cross-entropy target, so -2 log L is "
        "about the same small number for all and both reduce to the parameter count omega "
        "(`params`); Kendall tau with `params` over the converged models: " + ", ".join(taus) + "."
    )


def reproduce(study: Path, out: Path) -> str:
    """The commands that rebuild this report from scratch (ledger in ``results/``)."""
    study, out = _relative(study), _relative(out)
    return (
        f"Reproduce:\n\n```bash\nshiftbench run {study} --store results\n"
        f"shiftbench report {study} --store results --out {out}\n```"
    )


def _relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(context: AnalysisContext) -> None:
    context.report.text(reproduce(context.study.path, context.report.out))
    table = measure_table.build(context.ledger)
    n = len(table.frame)
    context.report.text(
        f"{n} trained models; {table.n_unconverged} did not reach {CONVERGED_ACC:.0%} training "
        f"accuracy and are excluded from the statistics below (kept in the ledger, "
        f"`converged = False`). Hyperparameters varied: {', '.join(table.hparams) or 'none'}; "
        f"{len(table.measures)} measures; shifts: {', '.join(table.shifts) or 'none'}."
    )
    for line in [*settings(context), information_criteria(table)]:
        if line:
            context.report.text(line)
    if n:
        context.report.table(
            "measures_targets", target_summary(table), "Targets over the converged models"
        )
