"""The index of a folder of reports (``shiftbench index FOLDER``): every report under it as a
page linked to its HTML site (``report.site``), each study's ledger state when the folder is
a store, and the rebuild of every published site that shares the folder's ``assets/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup

from shiftbench.report.site import ASSETS, CSS, MARKDOWN
from shiftbench.store import ledger as store
from shiftbench.store import schema

DOCUMENT = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>{{ css }} table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ddd; padding: .2em .6em; text-align: left; }</style>
</head><body>
{% if up %}<nav><a href="{{ up }}">all reports</a></nav>{% endif %}
{{ body }}
</body></html>
""",
    autoescape=True,
)

INDEX = jinja2.Template(
    """<h1>{{ title }}</h1>
{% if studies %}<h2>Studies in the ledger</h2>
<table><tr><th>study</th><th>trials</th>{% for s in statuses %}<th>{{ s }}</th>{% endfor %}
<th>attempts</th><th>last result</th></tr>
{% for study in studies %}<tr><td>{% if study.name in linked %}<a href="{{ linked[study.name] }}">
{{- study.name }}</a>{% else %}{{ study.name }}{% endif %}</td><td>{{ study.trials }}</td>
{% for s in statuses %}<td>{{ study.counts[s] }}</td>{% endfor %}
<td>{{ study.attempts }}</td><td>{{ study.last }}</td></tr>{% endfor %}
</table>{% endif %}
<h2>Reports</h2>
<table><tr><th>report</th><th>title</th><th>interactive site</th><th>tables</th><th>figures</th>
</tr>
{% for r in reports %}<tr><td><a href="{{ r.page }}">{{ r.name }}</a></td><td>{{ r.title }}</td>
<td>{% if r.site %}<a href="{{ r.site }}">site</a>{% else %}not built{% endif %}</td>
<td>{{ r.tables }}</td><td>{{ r.figures }}</td></tr>{% endfor %}
</table>
""",
    autoescape=True,
)


@dataclass(frozen=True)
class ReportEntry:
    """One report folder as the index lists it (paths relative to the index)."""

    name: str
    title: str
    page: str
    site: str | None
    tables: int
    figures: int


@dataclass(frozen=True)
class LedgerState:
    """One study of a store: trials in its ledger per status, attempts, last result."""

    name: str
    trials: int
    counts: dict[str, int]
    attempts: int
    last: str


def _render_report(folder: Path, index: Path) -> ReportEntry:
    """``folder/report.html``: the folder's ``report.md`` as a page, linked to the index."""
    markdown = (folder / "report.md").read_text()
    title = markdown.splitlines()[0].lstrip("# ").strip() if markdown.strip() else folder.name
    up = Path(os.path.relpath(index, folder)).as_posix()
    body = Markup(MARKDOWN.render(markdown))
    (folder / "report.html").write_text(DOCUMENT.render(title=title, css=CSS, up=up, body=body))
    here = folder.relative_to(index.parent)
    site = folder / "index.html"
    return ReportEntry(
        name=here.as_posix(),
        title=title,
        page=(here / "report.html").as_posix(),
        site=(here / "index.html").as_posix() if site.exists() else None,
        tables=len(list(folder.glob("*.csv"))),
        figures=len(list(folder.glob("*.png"))),
    )


def _ledger_states(store_dir: Path) -> list[LedgerState]:
    """Each study folder of a store, as its ledger stands."""
    states = []
    for folder in sorted(Path(store_dir).glob("study=*")):
        name = folder.name.split("=", 1)[1]
        rows = store.read(store_dir, name)
        trials = store.trial_states(rows)
        counts = trials["status"].value_counts()
        last = rows["end_time"].max() if "end_time" in rows and not rows.empty else None
        states.append(
            LedgerState(
                name=name,
                trials=len(trials),
                counts={status: int(counts.get(status, 0)) for status in schema.STATUSES[:-1]},
                attempts=int(trials["attempts"].sum()),
                last=f"{last:%Y-%m-%d %H:%M UTC}" if pd.notna(last) else "",
            )
        )
    return states


def _report_folders(folder: Path) -> list[Path]:
    """The folders under ``folder`` with a ``report.md``, outside ledgers (``study=*``)."""
    return [
        report.parent
        for report in sorted(Path(folder).rglob("report.md"))
        if not any(part.startswith("study=") for part in report.parts)
    ]


def write_index(folder: Path) -> Path:
    """``folder/index.html``: every report under ``folder`` (a folder with ``report.md``),
    linked to its site when it has one and to its report as a page (``report.html``,
    written beside it); and, when ``folder`` is a store, each study's ledger state, linked
    to the report of the same name."""
    folder = Path(folder)
    index = folder / "index.html"
    reports = [_render_report(report, index) for report in _report_folders(folder)]
    body = Markup(
        INDEX.render(
            title=f"shiftbench reports: {folder.resolve().name}",
            studies=_ledger_states(folder),
            statuses=schema.STATUSES[:-1],
            reports=reports,
            linked={Path(r.name).name: r.site or r.page for r in reports},
        )
    )
    title = f"shiftbench: {folder.resolve().name}"
    index.write_text(DOCUMENT.render(title=title, css=CSS, up=None, body=body))
    return index


def rebuild_sites(folder: Path, stores: Iterable[Path], benchmarks: Path) -> list[str]:
    """Rebuild, with ``report --html``, every report under ``folder`` whose study file
    (``benchmarks/<folder name>.yml``) is there and whose ledger is in one of ``stores``
    (the first that has it), the sites sharing ``folder/assets``; then the index. Returns a
    line per report: what was rebuilt from where, or why not."""
    from shiftbench.report.build import build_report
    from shiftbench.spec.study import load_study

    folder = Path(folder)
    (folder / ASSETS).mkdir(exist_ok=True)
    done = []
    for out in _report_folders(folder):
        name = out.name
        study_file = Path(benchmarks) / f"{name}.yml"
        ledger = next((Path(s) for s in stores if (Path(s) / f"study={name}").is_dir()), None)
        if not study_file.is_file() or ledger is None:
            missing = study_file if not study_file.is_file() else "no store with its ledger"
            done.append(f"kept {out}: {missing}")
            continue
        built = build_report(load_study(study_file), ledger, out, html=True)
        done.append(f"rebuilt from {ledger}: {built.site.summary()}")
    return [*done, f"index written to {write_index(folder)}"]
