"""The study's DomainBed numbers beside DomainBed's published ones.

For each ColoredMNIST / RotatedMNIST condition of the study (test environment and algorithm),
every optimizer's test-environment accuracy (``test_in_acc``, DomainBed's protocol and error
bar; :func:`shiftbench.studies.optimizer_ood.selection.by_method`) under training-domain
validation, leave-one-domain-out and the oracle, beside DomainBed's published ERM and IRM
number for the same test environment and selection method (Gulrajani & Lopez-Paz, ICLR 2021,
full results: ``domainbed/results/2020_10_06_7df6f06/results.tex`` in
facebookresearch/DomainBed). Those were trained with Adam, DomainBed's ``MNIST_CNN``, all 70,000
MNIST digits, 5,000 steps and 20
random hyperparameter samples x 3 trial seeds; the study's own scale (data source, model,
steps, samples, seeds) is read from its ledger and printed under the table, since it is what
explains a difference. Datasets that are not DomainBed's (the 8x8 digits toys) have no
published number and are left out, with a line saying so.
"""

import pandas as pd

from shiftbench.plugins import registry
from shiftbench.report.build import AnalysisContext
from shiftbench.store import schema
from shiftbench.studies.optimizer_ood.selection import ERROR_BAR, METHODS, by_method, main_runs

# DomainBed's published results (results.tex above): (dataset, algorithm, method) -> one
# (mean %, error bar %) per test environment, in the dataset's environment order.
PUBLISHED: dict[tuple[str, str, str], tuple[tuple[float, float], ...]] = {
    ("ColoredMNIST", "erm", "training_domain"): ((71.7, 0.1), (72.9, 0.2), (10.0, 0.1)),
    ("ColoredMNIST", "irm", "training_domain"): ((72.5, 0.1), (73.3, 0.5), (10.2, 0.3)),
    ("ColoredMNIST", "erm", "leave_one_domain_out"): ((50.0, 0.2), (50.1, 0.2), (10.0, 0.0)),
    ("ColoredMNIST", "irm", "leave_one_domain_out"): ((46.7, 2.4), (51.2, 0.3), (23.1, 10.7)),
    ("ColoredMNIST", "erm", "oracle"): ((71.8, 0.4), (72.9, 0.1), (28.7, 0.5)),
    ("ColoredMNIST", "irm", "oracle"): ((72.0, 0.1), (72.5, 0.3), (58.5, 3.3)),
    ("RotatedMNIST", "erm", "training_domain"): (
        (95.9, 0.1),
        (98.9, 0.0),
        (98.8, 0.0),
        (98.9, 0.0),
        (98.9, 0.0),
        (96.4, 0.0),
    ),
    ("RotatedMNIST", "irm", "training_domain"): (
        (95.5, 0.1),
        (98.8, 0.2),
        (98.7, 0.1),
        (98.6, 0.1),
        (98.7, 0.0),
        (95.9, 0.2),
    ),
    ("RotatedMNIST", "erm", "leave_one_domain_out"): (
        (95.3, 0.2),
        (98.9, 0.1),
        (98.9, 0.1),
        (98.8, 0.1),
        (98.5, 0.1),
        (96.2, 0.2),
    ),
    ("RotatedMNIST", "irm", "leave_one_domain_out"): (
        (94.5, 0.5),
        (98.2, 0.2),
        (98.7, 0.1),
        (96.6, 1.5),
        (98.4, 0.1),
        (95.8, 0.1),
    ),
    ("RotatedMNIST", "erm", "oracle"): (
        (95.3, 0.2),
        (98.7, 0.1),
        (98.9, 0.1),
        (98.7, 0.2),
        (98.9, 0.0),
        (96.2, 0.2),
    ),
    ("RotatedMNIST", "irm", "oracle"): (
        (94.9, 0.6),
        (98.7, 0.2),
        (98.6, 0.1),
        (98.6, 0.2),
        (98.7, 0.1),
        (95.2, 0.3),
    ),
}
SCALE = ("ds.source", "obj.model", "obj.steps", "obj.irm_reset_to", "search.hparams")


def domainbed_dataset(dataset: str) -> str | None:
    """DomainBed's name for a dataset plugin, when DomainBed published numbers for it."""
    name = getattr(registry.dataset_class(dataset), "domainbed_name", None)
    return name if any(key[0] == name for key in PUBLISHED) else None


def published(dataset: str, algorithm: str, method: str, test_env: int) -> tuple[float, float]:
    """DomainBed's published (mean, error bar), in %, or NaNs where it published none."""
    row = PUBLISHED.get((dataset, algorithm, method))
    return row[test_env] if row and 0 <= test_env < len(row) else (float("nan"),) * 2


def comparison(done: pd.DataFrame) -> pd.DataFrame:
    """One row per DomainBed dataset, test environment, algorithm and optimizer: the study's
    number (%) and DomainBed's published one under each selection method, and their difference
    in points."""
    rows = []
    for algorithm, runs in done.groupby(done.get("obj.algorithm", pd.Series("erm", done.index))):
        table = by_method(runs)
        for _, got in table.iterrows():
            name = domainbed_dataset(got["dataset"])
            if name is None:
                continue
            row = {
                "dataset": got["dataset"],
                "test_env": int(got["ds.test_env"]),
                "algorithm": algorithm,
                "solver": got["solver"],
                "seeds": int(got["seeds"]),
            }
            for method in METHODS:
                ours = 100 * got.get(method, float("nan"))
                mean, err = published(name, algorithm, method, row["test_env"])
                row[method] = ours
                row[f"{method}_err"] = 100 * got.get(f"{method}_err", float("nan"))
                row[f"{method}_domainbed"] = mean
                row[f"{method}_domainbed_err"] = err
                row[f"{method}_diff"] = ours - mean
            rows.append(row)
    return pd.DataFrame(rows)


def scale(done: pd.DataFrame) -> str:
    """The study's scale, read from its ledger: what to weigh a difference against."""
    runs = main_runs(done)
    parts = [
        f"{column.split('.', 1)[1]} {', '.join(map(str, sorted(runs[column].dropna().unique())))}"
        for column in SCALE
        if column in runs
    ]
    samples = runs.groupby("solver")["sample"].nunique()
    parts.append(f"{samples.min()}-{samples.max()} hyperparameter samples per optimizer")
    parts.append(f"{runs['seed'].nunique()} trial seeds")
    return "; ".join(parts)


def run(context: AnalysisContext) -> None:
    done = schema.with_status(context.ledger, schema.DONE)
    table = comparison(done) if not done.empty else pd.DataFrame()
    if table.empty:
        context.report.text(
            "No finished trial on a dataset DomainBed published numbers for (ColoredMNIST, "
            "RotatedMNIST): nothing to set beside DomainBed's tables."
        )
        return
    missing = [m for m in METHODS if table[m].isna().all()]
    shown = table.drop(columns=[c for m in missing for c in table if c.startswith(m)])
    context.report.table(
        "optimizer_ood_domainbed",
        shown.round(1),
        "Test-environment accuracy (%, env<t>_in_acc) beside DomainBed's published ERM/IRM "
        f"tables (Adam; results 2020_10_06_7df6f06), per selection method ({ERROR_BAR}); "
        "_diff = this study - DomainBed, in points",
    )
    lines = [f"This study's scale: {scale(done)}."]
    lines.append(
        "DomainBed's: all 70,000 MNIST digits, MNIST_CNN, 5,000 steps, Adam, 20 hyperparameter "
        "samples x 3 trial seeds; IRM restarts with Adam at the penalty switch."
    )
    if missing:
        lines.append(
            "Not in this study: "
            + ", ".join(METHODS[m].description for m in missing)
            + " (leave-one-domain-out needs the val_env companion runs)."
        )
    for method in METHODS:
        if method in missing:
            continue
        absent = table[table[method].isna()].drop_duplicates(["dataset", "test_env"])
        if not absent.empty:
            where = ", ".join(f"{r.dataset} test env {r.test_env}" for r in absent.itertuples())
            lines.append(
                f"{METHODS[method].description.capitalize()} is not in this study for {where}"
                " (no val_env companion runs there)."
            )
    context.report.text("\n\n".join(lines))
