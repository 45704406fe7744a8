"""Build time and page weight of the HTML site of a 10,000-trial study.

Expands a study of 10,000 trials (4 optimizers x 1,250 random samples x 2 seeds on
ColoredDigits), writes a synthetic ledger for it with the real row and store code
(``shiftbench.store.schema.trial_rows``, ``shiftbench.store.ledger.append``; 5 checkpoints
per trial,
made-up accuracies), then times ``shiftbench report --html`` on it (the report's analyses
and the site) and prints the site's size, the weight of the index and trial-list pages
(each with the scripts it loads) and of what a trial page loads (the page, and the one data
file of its trial).
Run: ``python perf/html_site.py [--trials 10000] [--keep DIR]`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from shiftbench.report.build import build_report
from shiftbench.report.site import ASSETS, ITABLES_JS, PLOTLY_JS, TRIAL_DATA, TRIAL_PAGE
from shiftbench.spec.study import load_study
from shiftbench.store import ledger as store
from shiftbench.store.schema import trial_rows

SOLVERS = ("sgd", "momentum", "rmsprop", "adam")
STEPS = (0, 100, 200, 300, 400)
BATCH = 1000


def study_file(folder: Path, trials: int) -> Path:
    spec = {
        "name": "site_perf",
        "description": f"{trials} synthetic trials for the HTML site's build time",
        "datasets": {"colored_digits": {"test_env": [2]}},
        "objective": {"steps": STEPS[-1], "eval_every": STEPS[1]},
        "solvers": {name: {} for name in SOLVERS},
        "search": {"kind": "random", "trials_per_solver": trials // (2 * len(SOLVERS))},
        "seeds": [0, 1],
        "analyses": ["id_ood_table", "id_ood_scatter", "optimizer_ood_returns"],
    }
    path = folder / "site_perf.yml"
    path.write_text(yaml.safe_dump(spec))
    return path


def curve(rng: np.random.Generator) -> list[dict]:
    """Made-up checkpoints: accuracies that rise towards a random plateau."""
    top, gap = rng.uniform(0.5, 0.99), rng.uniform(0.0, 0.3)
    out = []
    for step in STEPS:
        rise = 1 - np.exp(-step / 150)
        out.append(
            {
                "step": step,
                "train_loss": float(2.3 * (1 - rise) + 0.05),
                "train_acc": float(0.1 + (top - 0.1) * rise),
                "id_acc": float(0.1 + (top - 0.1) * rise),
                "ood_acc": float(0.1 + (top - gap - 0.1) * rise),
                "oracle_acc": float(0.1 + (top - gap - 0.05) * rise),
                "id_loss": float(2.3 * (1 - rise) + 0.1),
                "ood_loss": float(2.3 * (1 - rise) + 0.2),
            }
        )
    return out


def write_ledger(study, store_dir: Path) -> int:
    rng = np.random.default_rng(0)
    provenance = {"shiftbench_version": "perf", "device": "cpu", "hostname": "perf"}
    trials = study.trials()
    for start in range(0, len(trials), BATCH):
        rows = []
        for trial in trials[start : start + BATCH]:
            begun = datetime.now(UTC)
            rows += trial_rows(trial, study.name, 0, "done", "", curve(rng), {}, begun, provenance)
        store.append(store_dir, study.name, rows)
    store.compact(store_dir, study.name)
    return len(trials)


def weight(*paths: Path) -> str:
    size = sum(p.stat().st_size for p in paths)
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, default=None, help="Build here and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        study = load_study(study_file(folder, args.trials))
        started = time.perf_counter()
        n = write_ledger(study, folder / "store")
        seconds = time.perf_counter() - started
        print(f"ledger: {n} trials x {len(STEPS)} checkpoints in {seconds:.1f} s")
        started = time.perf_counter()
        report = build_report(study, folder / "store", folder / "report", html=True)
        built = time.perf_counter() - started
        site, out = report.site, report.out
        assets = out / ASSETS
        scripts = (assets / PLOTLY_JS, assets / ITABLES_JS, assets / "site.css")
        data = sorted((out / TRIAL_DATA).glob("*.js"), key=lambda p: p.stat().st_size)
        print(f"build (analyses + site): {built:.1f} s")
        print(f"site: {site.summary()}")
        print(f"index page: {weight(out / 'index.html')} (+ scripts {weight(*scripts)})")
        print(f"trial list: {weight(out / 'trials.html')} (+ the same scripts)")
        print(
            f"a trial page: {weight(out / TRIAL_PAGE)} + one of {len(data)} data files "
            f"({weight(*data)} in all; {weight(data[len(data) // 2])} median, "
            f"{weight(data[-1])} largest) + {PLOTLY_JS}"
        )


if __name__ == "__main__":
    main()
