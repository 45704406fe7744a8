"""The ``shiftbench`` command: run, status, report, index and list."""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from itertools import islice
from pathlib import Path

import click

from shiftbench.plugins import registry
from shiftbench.spec import expansion_cache
from shiftbench.spec.settings import DEFAULT_TRIAL_LIMIT
from shiftbench.spec.study import StudyError, in_study, load_study
from shiftbench.store import artifacts, schema
from shiftbench.store import ledger as store
from shiftbench.store.lock import StudyLock, StudyLocked

DEFAULT_STORE = Path("results")


def _load(path: str, trial_limit: int | None = None):
    try:
        return load_study(path, trial_limit)
    except StudyError as exc:
        raise click.ClickException(str(exc)) from None


def _store_option(f):
    return click.option(
        "--store",
        "store_dir",
        type=click.Path(path_type=Path),
        default=DEFAULT_STORE,
        show_default=True,
        help="Ledger root folder.",
    )(f)


def _limit_option(f):
    return click.option(
        "--trial-limit",
        type=click.IntRange(min=1),
        default=None,
        help="Accept a study that expands to up to N trials (default: the study's "
        f"trial_limit, else {DEFAULT_TRIAL_LIMIT:,}).",
    )(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """shiftbench: sweeps of optimizers and models under distribution shift."""
    warnings.simplefilter("ignore", DeprecationWarning)


@main.command()
@click.argument("study_file", type=click.Path())
@_store_option
@click.option(
    "--address",
    default=None,
    help="Join a running Ray cluster instead of starting an embedded one.",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Worker processes (default: one per CPU; 0 runs trials in this process without Ray).",
)
@click.option("--max-trials", type=int, default=None, help="Run at most N pending trials.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option(
    "--retrain",
    is_flag=True,
    help="Train again (a new attempt) the done trials that lack a measure and have no "
    "stored model.",
)
@_limit_option
def run(
    study_file: str,
    store_dir: Path,
    address: str | None,
    workers: int | None,
    max_trials: int | None,
    quiet: bool,
    retrain: bool,
    trial_limit: int | None,
) -> None:
    """Run or resume a study: only trials the ledger does not hold yet are run."""
    from shiftbench.sweep.connect import ClusterError
    from shiftbench.sweep.driver import run_study
    from shiftbench.sweep.planning import Plan

    study = _load(study_file, trial_limit)
    if workers is not None and workers < 0:
        raise click.ClickException("--workers must be >= 0")

    def announce(todo: Plan) -> None:
        """Check every pending trial's data (built one at a time), then say what will run."""
        study.check_data(islice(study.iter_trials(todo.skip), max_trials))
        click.echo(
            f"{study.name}: {todo.total} trials, "
            f"{todo.total - todo.pending_count - len(todo.exhausted)} already in the "
            f"ledger, {todo.pending_count} to run"
        )
        if todo.measure:
            click.echo(f"{len(todo.measure)} done trials get missing measures from stored models")
        if todo.unstored:
            click.echo(
                f"{len(todo.unstored)} done trials lack measures and have no stored model"
                + (": training them again" if retrain else " (keep: none): --retrain trains them")
            )

    try:
        summary = run_study(
            study,
            store_dir,
            workers=workers,
            address=address,
            max_trials=max_trials,
            progress=not quiet,
            retrain=retrain,
            on_plan=announce,
        )
    except (StudyLocked, StudyError, ClusterError) as exc:
        raise click.ClickException(str(exc)) from None
    counts = ", ".join(f"{v} {k}" for k, v in sorted(summary.counts.items())) or "nothing new"
    click.echo(f"ran {summary.ran} trials in {summary.seconds:.1f}s: {counts}")
    if summary.full:
        raise click.ClickException(
            f"{store.study_dir(store_dir, study.name)}: disk full ({summary.full}); the rows of "
            f"{len(summary.unlanded)} finished trials did not land (every other row did): "
            "free space and run the same command again"
        )
    _echo_models(store_dir, study.name)
    after = summary.plan
    if after.exhausted or any(summary.counts.get(s) for s in schema.UNSUCCESSFUL):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", store.LedgerWarning)
            ledger = store.read(store_dir, study.name)
        _echo_failures(ledger, study_file, set(after.states))
    if summary.interrupted:
        click.echo(
            f"interrupted: {after.pending_count} trials left; run the same command to resume"
        )
        sys.exit(130)
    if after.pending_count or after.exhausted:
        click.echo(
            f"incomplete: {after.pending_count} pending, {len(after.exhausted)} failed "
            f"after {study.retries + 1} attempts (see `shiftbench status`)"
        )
        sys.exit(1)
    click.echo(f"complete: results in {store.study_dir(store_dir, study.name)}")


@main.command()
@click.argument("study_file", type=click.Path())
@_store_option
@_limit_option
def status(study_file: str, store_dir: Path, trial_limit: int | None) -> None:
    """Done / failed / diverged / pending counts of a study."""
    study = expansion_cache.lookup(study_file, trial_limit) or expansion_cache.remember(
        study_file, trial_limit, _load(study_file, trial_limit)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", store.LedgerWarning)
        ledger = store.read(store_dir, study.name)
    states = store.trial_states(ledger)
    states = states[in_study(states["trial_id"], study.trial_numbers)]
    counts = Counter(states["status"])
    counts["pending"] += len(study.trial_numbers) - len(states)
    exhausted = int(
        (states["status"].isin(schema.UNSUCCESSFUL) & (states["attempts"] > study.retries)).sum()
    )
    click.echo(f"{study.name}: {len(study.trial_numbers)} trials")
    for state in schema.STATUSES:
        click.echo(f"  {state:<9}{counts.get(state, 0):>7}")
    if exhausted:
        click.echo(f"  ({exhausted} failed trials have used all {study.retries + 1} attempts)")
    for path, reason in store.skipped_files(store_dir, study.name).items():
        click.echo(f"  unreadable ledger file left untouched: {path}: {reason}")
    done = states.loc[states["status"] == schema.DONE, "trial_id"]
    gaps = artifacts.measure_gaps(
        store_dir, study.name, ledger, done, study.measures, study.measure_settings
    )
    missing = Counter(n for gap in gaps if gap.path for n in gap.names)
    if missing:
        names = ", ".join(f"{n} ({k} trials)" for n, k in sorted(missing.items()))
        click.echo(f"  measures missing, to compute on stored models by `run`: {names}")
    unstored = sum(not gap.path for gap in gaps)
    if unstored:
        click.echo(
            f"  {unstored} done trials lack measures and have no stored model "
            "(`run --retrain` trains them again)"
        )
    _echo_models(store_dir, study.name)
    for path, reason in artifacts.corrupt(store_dir, study.name).items():
        click.echo(f"  corrupt model file left untouched: {path}: {reason}")
    _echo_failures(ledger, study_file, set(states["trial_id"]))


def _echo_models(store_dir: Path, study: str) -> None:
    line = artifacts.size_line(store_dir, study)
    if line:
        click.echo(line)


@main.command()
@click.argument("study_file", type=click.Path())
@_store_option
@_limit_option
def repair(study_file: str, store_dir: Path, trial_limit: int | None) -> None:
    """Delete what interrupted writes left (temporary files, merged batches) in a study's
    ledger and model store; stored rows and models are never touched."""
    study = _load(study_file, trial_limit)
    try:
        with StudyLock(store_dir, study.name):
            removed = [*map(str, store.repair(store_dir, study.name))]
            removed += artifacts.repair(store_dir, study.name)
    except StudyLocked as exc:
        raise click.ClickException(str(exc)) from None
    for path in removed:
        click.echo(f"removed {path}")
    click.echo(f"{study.name}: {len(removed)} leftover files removed")


def _echo_failures(ledger, study_file: str, trial_ids: set[str]) -> None:
    """The distinct reasons why the study's failed trials failed, with counts and an example."""
    reasons = store.failure_reasons(ledger, trial_ids)
    if reasons:
        click.echo(
            f"failures (last line of the error; `shiftbench rerun ID --study {study_file}`"
            " shows it all):"
        )
    for reason, count, trial_id in reasons:
        click.echo(f"  {count:>6} x {reason}  (e.g. trial {trial_id})")


@main.command()
@click.argument("trial_id")
@click.option(
    "--study",
    "study_file",
    type=click.Path(),
    required=True,
    help="The study file the trial belongs to.",
)
@_store_option
@_limit_option
def rerun(trial_id: str, study_file: str, store_dir: Path, trial_limit: int | None) -> None:
    """Rerun one trial in this process; exit 0 if its numbers match the ledger's."""
    from shiftbench.sweep.rerun import rerun_trial

    study = _load(study_file, trial_limit)
    try:
        result = rerun_trial(study, store_dir, trial_id)
    except KeyError as exc:
        raise click.ClickException(exc.args[0]) from None
    click.echo(
        f"{trial_id} {result.trial.solver_label} seed {result.trial.seed}: ledger "
        f"{result.ledger_status}, rerun {result.status}"
    )
    for column, how in result.differences.items():
        click.echo(f"  {column}: {how}")
    click.echo("numbers match the ledger" if result.matches else "MISMATCH")
    sys.exit(0 if result.matches else 1)


@main.command()
@click.argument("study_file", type=click.Path())
@_store_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default: STORE/reports/STUDY).",
)
@_limit_option
@click.option("--html", is_flag=True, help="Also write the HTML site (index.html) there.")
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Rebuild whenever the ledger changes, looking every SECONDS, until Ctrl-C.",
)
def report(
    study_file: str,
    store_dir: Path,
    out: Path | None,
    trial_limit: int | None,
    html: bool,
    watch: float | None,
) -> None:
    """Run every analysis the study names: Markdown, LaTeX, CSV and PNG (and HTML)."""
    from shiftbench.report.build import build_report, watch_report

    study = _load(study_file, trial_limit)
    if watch:
        watch_report(study, store_dir, out, html, watch, click.echo)
        return
    try:
        built = build_report(study, store_dir, out, html=html)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(built.printed))
    click.echo(f"report written to {built.out / 'report.md'}")
    if built.site:
        click.echo(built.site.summary())


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--rebuild",
    "stores",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="First rebuild (report --html) each report under FOLDER whose ledger is in this "
    "store (repeatable), the sites sharing FOLDER/assets.",
)
@click.option(
    "--benchmarks",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("benchmarks"),
    show_default=True,
    help="Where --rebuild finds each report's study file, <report folder name>.yml.",
)
def index(folder: Path, stores: tuple[Path, ...], benchmarks: Path) -> None:
    """Write FOLDER/index.html: every report under FOLDER, and each study's ledger state when
    FOLDER is a store."""
    from shiftbench.report.index import rebuild_sites, write_index

    if not stores:
        click.echo(f"index written to {write_index(folder)}")
        return
    try:
        click.echo("\n".join(rebuild_sites(folder, stores, benchmarks)))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command(name="list")
def list_plugins() -> None:
    """Solvers, datasets, measures and analyses, with their parameters."""
    from shiftbench.measures import core as measures

    click.echo("solvers:")
    for name in registry.names("solvers"):
        cls = registry.solver_class(name)
        click.echo(f"  {name:<12} {_params(cls.parameters)}")
        if cls.search_space:
            space = ", ".join(f"{k}~{v}" for k, v in sorted(cls.search_space.items()))
            click.echo(f"  {'':<12} search: {space}")
    click.echo("datasets:")
    for name in registry.names("datasets"):
        click.echo(f"  {name:<12} {_params(registry.dataset_class(name).parameters)}")
    click.echo(f"objective:\n  {_params(registry.objective_class().parameters)}")
    click.echo("measures:")
    click.echo("  " + ", ".join(measures.available()))
    click.echo("analyses:")
    for name in registry.names("analysis"):
        doc = (registry.analysis(name).__doc__ or "").strip().split("\n")[0]
        click.echo(f"  {name:<22} {doc}")


def _params(parameters: dict) -> str:
    return ", ".join(f"{k}={v[0]!r}" for k, v in parameters.items())


@main.command()
@click.argument("study_file", type=click.Path())
@_store_option
@click.option(
    "--benchopt",
    "out",
    type=click.Path(path_type=Path),
    required=True,
    help="Parquet file name with Benchopt's result columns, written in the benchmark's "
    "outputs/ folder (the only place `benchopt plot` opens results from).",
)
@_limit_option
def export(study_file: str, store_dir: Path, out: Path, trial_limit: int | None) -> None:
    """Write the study's checkpoints with Benchopt's result columns."""
    from shiftbench.report.benchopt import result_path, to_benchopt

    study = _load(study_file, trial_limit)
    try:
        target = result_path(out)
    except ValueError as exc:
        raise click.ClickException(f"--benchopt: {exc}") from None
    frame = to_benchopt(store.final_rows(store.read(store_dir, study.name)))
    if frame.empty:
        raise click.ClickException(
            f"{study.name}: no finished trial in {store.study_dir(store_dir, study.name)} to "
            f"export; run `shiftbench run {study_file} --store {store_dir}` first"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    click.echo(f"{len(frame)} rows written to {target}")
    click.echo(f"view with: benchopt plot {target.parent.parent} -f {target}")


@main.group()
def cluster() -> None:
    """A persistent local Ray cluster with warm workers, which `run` joins while it is up."""


@cluster.command(name="start")
@click.option("--workers", type=int, default=None, help="Warm workers (default: one per CPU).")
def cluster_start(workers: int | None) -> None:
    """Start the local cluster (127.0.0.1 only) and its warm workers."""
    from shiftbench.sweep import cluster as local

    try:
        address, n = local.start(workers)
    except local.ClusterCommandError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"local cluster at {address} with {n} warm workers; `shiftbench run` joins it")


@cluster.command(name="stop")
def cluster_stop() -> None:
    """Stop the local cluster and everything it started."""
    from shiftbench.sweep import cluster as local

    click.echo("local cluster stopped" if local.stop() else "no local cluster was running")


@cluster.command(name="status")
def cluster_status() -> None:
    """The local cluster's address and its warm workers."""
    import ray

    from shiftbench.sweep import cluster as local
    from shiftbench.sweep.connect import start_ray

    address = local.running()
    if address is None:
        click.echo("no local cluster running (`shiftbench cluster start` starts one)")
        return
    start_ray(None, None)
    pids = [pid for _, pid in ray.get([a.identity.remote() for a in local.warm_workers()])]
    click.echo(f"local cluster at {address}: {len(pids)} warm workers (pids {pids})")
