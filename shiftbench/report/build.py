"""Reports: run the analyses a study names and write Markdown, LaTeX, CSV and PNG.

An analysis is a file ``analysis/<name>.py`` with ``run(context)``; it reads
``context.ledger`` (the latest attempt of each trial) and writes through
``context.report``, which keeps every format in step and builds the index. The report
also keeps every table, figure and text in ``items`` (with the analysis that wrote it), so
the HTML site (``shiftbench.report.site``) shows the very same tables and figures.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from shiftbench.plugins import registry
from shiftbench.spec.study import Study, in_study
from shiftbench.store import ledger as store

TERMINAL_COLUMNS = 100  # the printed tables fit an ordinary terminal; files keep every character
if TYPE_CHECKING:
    from shiftbench.report.site import Site

LATEX_SPECIAL = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$"}


def latex_escape(text: str) -> str:
    """Escape the characters LaTeX treats specially in table cells."""
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def fit_width(frame: pd.DataFrame, width: int) -> str:
    """``frame`` as a plain-text table at most ``width`` characters wide where it can be, for
    a terminal: empty columns are left out, headers wrap onto lines of 8 (``_`` reads as a
    space), then the column with the longest cells is cut (ending in "~") until the table
    fits or no cell is longer than 8 characters (short numbers are never cut)."""
    cells = frame.astype(object).fillna("").astype(str)  # missing values print blank
    cells = cells.loc[:, (cells != "").any()]
    names = [str(c).replace("_", " ") for c in cells]
    heads = [[name] for name in names]
    while True:
        text = _plain_table(cells, heads)
        excess = max(map(len, text.splitlines())) - width
        if excess > 0 and any(len(h) == 1 and len(h[0]) > 8 for h in heads):
            heads = [textwrap.wrap(name, 8) or [""] for name in names]
            continue
        room = {c: int(cells[c].str.len().max()) - 8 for c in cells}
        column = max(room, key=room.get, default=None)
        if excess <= 0 or column is None or room[column] <= 0:
            return text
        keep = int(cells[column].str.len().max()) - min(excess, room[column]) - 1
        long = cells[column].str.len() > keep + 1
        cells.loc[long, column] = cells.loc[long, column].str[:keep] + "~"


def _plain_table(cells: pd.DataFrame, heads: list[list[str]]) -> str:
    """Columns two spaces apart, multi-line headers on top, a rule of dashes below them."""
    depth = max(map(len, heads), default=1)
    columns = [[*head, *[""] * (depth - len(head)), *cells[c]] for head, c in zip(heads, cells)]
    widths = [max(map(len, column)) for column in columns]
    rows = [list(row) for row in zip(*columns)]
    rows.insert(depth, ["-" * w for w in widths])
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


@dataclass(frozen=True, eq=False)
class Item:
    """One table, figure or text of a report, as the HTML site shows it.

    ``kind`` is ``table`` (``frame``: the cells as the Markdown shows them), ``figure``
    (``path``: the PNG; ``plotly``: the same figure as a plotly dict, when the report keeps
    them) or ``text`` (``markdown``)."""

    kind: str
    analysis: str
    name: str = ""
    caption: str = ""
    frame: pd.DataFrame | None = None
    path: Path | None = None
    plotly: dict | None = None
    markdown: str = ""


@dataclass
class Report:
    """Writes tables and figures under ``out`` and collects them into ``report.md``.

    With ``interactive``, each figure is also kept as a plotly dict for the HTML site."""

    out: Path
    title: str
    sections: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # what the CLI prints: the sections, with tables cut to TERMINAL_COLUMNS
    printed: list[str] = field(default_factory=list)
    interactive: bool = False
    analysis: str = ""
    items: list[Item] = field(default_factory=list)
    site: Site | None = None

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)

    def table(self, name: str, frame: pd.DataFrame, caption: str, digits: int = 3) -> str:
        """Write ``name``.md/.tex/.csv; returns the Markdown (also added to the report)."""
        frame.to_csv(self.out / f"{name}.csv", index=False)
        shown = frame.copy()
        for column in shown.select_dtypes("float").columns:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.{digits}f}")
        markdown = shown.to_markdown(index=False, disable_numparse=True)
        (self.out / f"{name}.md").write_text(f"{caption}\n\n{markdown}\n")
        escaped = shown.rename(columns=latex_escape).map(
            lambda v: latex_escape(v) if isinstance(v, str) else v
        )
        latex = escaped.style.hide(axis="index").to_latex(
            hrules=True, caption=latex_escape(caption), label=f"tab:{name}", position="t"
        )
        (self.out / f"{name}.tex").write_text(latex)
        self.files += [self.out / f"{name}.{ext}" for ext in ("md", "tex", "csv")]
        self.sections.append(f"## {caption}\n\n{markdown}\n")
        self.printed.append(f"## {caption}\n\n{fit_width(shown, TERMINAL_COLUMNS)}\n")
        self.items.append(Item("table", self.analysis, name, caption, frame=shown))
        return markdown

    def figure(self, name: str, fig: plt.Figure, caption: str) -> Path:
        """Save ``fig`` as ``name``.png (and close it)."""
        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=150, bbox_inches="tight")
        plotly = None
        if self.interactive:
            from shiftbench.report.plotly_figures import plotly_figure

            plotly = plotly_figure(fig)
        plt.close(fig)
        self.items.append(Item("figure", self.analysis, name, caption, path=path, plotly=plotly))
        self.files.append(path)
        self.sections.append(f"## {caption}\n\n![{caption}]({path.name})\n")
        self.printed.append(f"## {caption}\n\n{path}\n")
        return path

    def text(self, markdown: str) -> None:
        self.sections.append(markdown.rstrip() + "\n")
        self.printed.append(markdown.rstrip() + "\n")
        self.items.append(Item("text", self.analysis, markdown=markdown))

    def finish(self) -> Path:
        index = self.out / "report.md"
        index.write_text(f"# {self.title}\n\n" + "\n".join(self.sections))
        return index


@dataclass
class AnalysisContext:
    """What an analysis gets: the study, its ledger rows and the report to write to."""

    study: Study
    ledger: pd.DataFrame
    report: Report


def build_report(
    study: Study, store_dir: Path, out: Path | None = None, html: bool = False
) -> Report:
    """Run every analysis the study names over its ledger: the rows of the trials the study
    file names now (a trial dropped from the file stays in the ledger but not the report).
    ``html`` also writes the study's HTML site beside the report (``report.site``)."""
    out = Path(out) if out else Path(store_dir) / "reports" / study.name
    ledger = store.final_rows(store.read(store_dir, study.name))
    if not ledger.empty:
        ledger = ledger[in_study(ledger["trial_id"], study.trial_numbers)]
    if ledger.empty:
        raise ValueError(
            f"{study.path}: no results in {store_dir} for study "
            f"{study.name!r}; run `shiftbench run {study.path} --store {store_dir}` first"
        )
    report = Report(out, f"{study.name}: {study.description}".rstrip(": "), interactive=html)
    context = AnalysisContext(study, ledger, report)
    for name in study.analyses:
        report.analysis = name
        registry.analysis(name).run(context)
    report.finish()
    if html:
        from shiftbench.report.site import write_site

        report.site = write_site(context, Path(store_dir))
    return report


def _ledger_files(store_dir: Path, study: str) -> list[tuple[str, int, int]]:
    """Name, size and modification time of each of the study's ledger files."""
    files = []
    for path in sorted(store.study_dir(store_dir, study).glob("*.parquet")):
        try:
            stat = path.stat()
        except FileNotFoundError:  # compacted meanwhile: the next look sees the part
            continue
        files.append((path.name, stat.st_size, stat.st_mtime_ns))
    return files


def watch_report(
    study: Study,
    store_dir: Path,
    out: Path | None,
    html: bool,
    every: float,
    echo: Callable[[str], None] = print,
) -> None:
    """Rebuild the report (and the site) each time the study's ledger files change, looking
    every ``every`` seconds, until interrupted (Ctrl-C): a long run can be watched."""
    seen = None
    try:
        while True:
            files = _ledger_files(store_dir, study.name)
            if files != seen:
                seen = files
                try:
                    built = build_report(study, store_dir, out, html=html)
                except ValueError as exc:
                    echo(f"waiting: {exc}")
                else:
                    done = built.site.summary() if built.site else f"{built.out / 'report.md'}"
                    echo(f"{datetime.now():%H:%M:%S} rebuilt: {done}")
            time.sleep(every)
    except KeyboardInterrupt:
        echo("stopped watching")
