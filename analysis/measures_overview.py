"""The measures study's models and targets: how many models were trained, how many did not
reach 99% training accuracy (flagged, left out of every other measures_* analysis), and the
distribution of each target (generalization gaps and errors, IID and under each shift), after
the commands that reproduce the report: run it first in a study's ``analyses``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from shiftbench import measure_table
from shiftbench.measure_table import CONVERGED_ACC
from shiftbench.report import AnalysisContext


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
    if n:
        context.report.table(
            "measures_targets", target_summary(table), "Targets over the converged models"
        )
