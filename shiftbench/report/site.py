"""The HTML site of a study: a static, self-contained copy of its report to look, filter and
click through (``shiftbench report STUDY --html``). The index over a folder of reports, which
links these sites, is ``report.index``.

The site shows the report's own items (``shiftbench.report.build.Item``): the tables the analyses
wrote, as sortable, filterable DataTables (itables), and their matplotlib figures redrawn
by plotly from the figure's artists (``report.plotly_figures``), so nothing is computed
twice; a figure with an artist the translation does not cover keeps its PNG alone. A scatter whose
points carry trial ids as matplotlib URLs (``ax.scatter(..., urls=ids)``) names each trial
on hover and opens its page on click.

Everything the pages need is written once into ``assets/`` (plotly.js, the DataTables
bundle of itables, a style sheet, the trial page's script), the site's own or one shared by
the sites of a folder, and read by relative paths: the site works offline and from
``file://``. At 10,000 trials the index stays small (the analyses aggregate); the trial list
is one DataTable that pages through the rows in the browser, and one page, ``trial.html#ID``,
shows any trial from the data file of its id's first two characters (``perf/html_site.py``
measures all three).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import itables.options
import jinja2
import numpy as np
import pandas as pd
import plotly.io as pio
from itables import to_html_datatable
from itables.javascript import generate_init_offline_itables_html
from markdown_it import MarkdownIt
from markupsafe import Markup, escape
from plotly.offline import get_plotlyjs

from shiftbench.report.plotly_figures import json_values
from shiftbench.store import schema

if TYPE_CHECKING:
    from shiftbench.report.build import AnalysisContext, Item

ASSETS = "assets"
PLOTLY_JS = "plotly.min.js"
ITABLES_JS = "itables.js"
TRIAL_PAGE = "trial.html"  # one page for every trial: trial.html#<trial id>
TRIAL_DATA = "trials"  # the trials' records, as scripts of 16**SHARD files at most
SHARD = 2
TRIAL_JS_FILE = "trial.js"
CURVES = {
    "loss": ("train_loss", "id_loss", "ood_loss"),
    "accuracy": ("train_acc", "id_acc", "ood_acc", "oracle_acc"),
}
CONFIG_PREFIXES = (*schema.CONFIG_PREFIXES, schema.ACCEL)  # shown in the trial's config
CONFIG_COLUMNS = ("attempt", "seed", "sample", "worker_pid")
WEBGL_POINTS = 2000
MARKDOWN = MarkdownIt("commonmark").enable("table")

CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1em;
       color: #222; }
nav { margin-bottom: 1em; } nav a { margin-right: 1em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
table.facts td, table.facts th { text-align: left; padding: .1em .8em .1em 0; }
.error { color: #a00; white-space: pre-wrap; }
"""

PAGE = jinja2.Template(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<link rel="stylesheet" href="{{ assets }}site.css">
<script src="{{ assets }}plotly.min.js"></script>
{% if tables %}<script src="{{ assets }}itables.js"></script>{% endif %}
</head><body>
<nav>{% for href, text in nav %}<a href="{{ href }}">{{ text }}</a>{% endfor %}</nav>
<h1 id="title">{{ title }}</h1>
{{ body }}
</body></html>
""",
    autoescape=True,
)

STUDY = jinja2.Template(
    """{% if description %}<p>{{ description }}</p>{% endif %}
<p>Reproduce:</p><pre>{{ reproduce }}</pre>
<h2 id="state">State</h2>
{{ counts }}
<p>Wall time: {{ wall }}.</p>
<h2 id="provenance">Provenance</h2>
{{ provenance }}
{% for analysis, items in sections %}
<h2 id="{{ analysis }}">{{ analysis }}</h2>
{% for item in items %}{{ item }}
{% endfor %}{% endfor %}
""",
    autoescape=True,
)

TRIAL = jinja2.Template(
    """<p id="status">loading the trial named after # in the address</p>
<div id="curves"></div>
<h2>Final measurements</h2>
<table class="facts" id="final"></table>
<h2>Config</h2>
<pre id="config"></pre>
<h2>Provenance</h2>
<table class="facts" id="provenance"></table>
<script src="{{ assets }}trial.js"></script>
""",
    autoescape=True,
)

# The trial page's script: reads the trial named after # from its data file, and draws it.
TRIAL_JS = jinja2.Template(
    """const LAYOUT = {{ layout | tojson }};
const PANELS = {{ panels | tojson }};
const byId = id => document.getElementById(id);
function facts(table, rows) {
  table.replaceChildren(...rows.map(([label, value]) => {
    const row = document.createElement("tr");
    row.append(document.createElement("th"), document.createElement("td"));
    row.cells[0].textContent = label;
    row.cells[1].textContent = value;
    return row;
  }));
}
window.shiftbenchTrials = trials => {
  const id = decodeURIComponent(location.hash.slice(1));
  const trial = trials[id];
  if (!trial) { byId("status").textContent = `no trial ${id} in this study`; return; }
  document.title = byId("title").textContent = trial.title;
  byId("status").textContent = trial.status + (trial.error ? ": " + trial.error : "");
  byId("status").className = trial.error ? "error" : "";
  const data = PANELS.flatMap(([axis, columns]) => columns.filter(c => c in trial.curves)
    .map(c => ({type: "scatter", mode: "lines+markers", name: c, x: trial.step,
                y: trial.curves[c], xaxis: "x" + axis, yaxis: "y" + axis})));
  Plotly.newPlot("curves", data, LAYOUT, {displaylogo: false, responsive: true});
  facts(byId("final"), trial.final);
  byId("config").textContent = JSON.stringify(trial.config, null, 2);
  facts(byId("provenance"), trial.provenance);
};
function load() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (!/^[A-Za-z0-9_-]+$/.test(id)) { byId("status").textContent = "no trial named"; return; }
  const script = document.createElement("script");
  script.src = "{{ data }}/" + id.slice(0, {{ shard }}) + ".js";
  script.onerror = () => { byId("status").textContent = `no trial ${id} in this study`; };
  document.head.append(script);
}
window.addEventListener("hashchange", load);
load();
"""
)


FACTS = jinja2.Template(
    """<table class="facts">{% for label, value in rows %}
<tr><th>{{ label }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>""",
    autoescape=True,
)


@dataclass(frozen=True)
class Site:
    """A written site: its index page, how many pages, trials and bytes (its own files; the
    scripts in ``assets``, shared or not, are counted apart)."""

    index: Path
    pages: int
    trials: int
    size: int
    assets: Path
    assets_size: int

    def summary(self) -> str:
        return (
            f"site written to {self.index} ({self.pages} pages, {self.trials} trials, "
            f"{self.size / 1e6:.1f} MB; scripts {self.assets_size / 1e6:.1f} MB in {self.assets})"
        )


def _facts(rows: Iterable[tuple[str, object]]) -> Markup:
    """A two-column table of labels and values (escaped)."""
    return Markup(FACTS.render(rows=rows))


def _datatable(frame: pd.DataFrame, table_id: str, links: bool = False) -> str:
    """A sortable, filterable, paginated table (itables' DataTables, offline bundle). A name
    of the column axis (a pivot's) is dropped: itables gives it a header cell of its own, one
    more than the columns, which breaks the column filters."""
    return to_html_datatable(
        frame.rename_axis(columns=None),
        table_id=table_id,
        connected=False,
        maxBytes=0,
        showIndex=False,
        allow_html=links,
        column_filters="footer",
        display_logo_when_loading=False,
        pageLength=25,
        scrollX=True,
        classes="display compact",
    )


def _figure_html(figure: dict, div_id: str) -> str:
    """A plotly figure in a page that already loads plotly.js; a click on a point that
    names a trial opens the trial's page."""
    click = (
        "document.getElementById('{plot_id}').on('plotly_click', e => {"
        " const id = e.points[0].customdata;"
        f" if (id) window.location.href = '{TRIAL_PAGE}#' + id; }});"
    )
    return pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        validate=False,
        div_id=div_id,
        post_script=click,
        config={"displaylogo": False, "responsive": True},
    )


def _varying(last: pd.DataFrame, prefixes: tuple[str, ...]) -> list[str]:
    """The configuration columns (by prefix) whose value differs between trials."""
    return [
        c for c in last.columns if c.startswith(prefixes) and last[c].astype(str).nunique() > 1
    ]


def _hover_text(rows: pd.DataFrame) -> dict[str, str]:
    """Per trial id, what a hover shows: the id, the data set, the solver, the seed and the
    hyperparameters that vary in the study."""
    last = rows.drop_duplicates("trial_id", keep="last").set_index("trial_id")
    params = _varying(last, (schema.DATASET, schema.HPARAM))
    out = {}
    for trial_id, row in last.iterrows():
        shown = [f"{c.split('.', 1)[1]}={_short(row[c])}" for c in params if pd.notna(row[c])]
        head = f"trial {trial_id}<br>{row.get('dataset', '')} {row.get('solver', '')}"
        out[str(trial_id)] = f"{head} seed {row.get('seed', '')}<br>" + "<br>".join(shown)
    return out


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _with_trials(figure: dict, hover: dict[str, str]) -> dict:
    """The figure with each trial-linked point's hover naming its trial; drawn with WebGL
    when it has more than ``WEBGL_POINTS`` of them (SVG slows down past a few thousand)."""
    linked = [trace for trace in figure["data"] if "customdata" in trace]
    webgl = sum(len(trace["customdata"]) for trace in linked) > WEBGL_POINTS
    for trace in linked:
        trace["text"] = [hover.get(str(t), f"trial {t}") for t in trace["customdata"]]
        trace["hovertemplate"] = "%{text}<br>(%{x:.4g}, %{y:.4g})<extra></extra>"
        trace["type"] = "scattergl" if webgl else trace["type"]
    return figure


def _item_html(item: Item, number: int, hover: dict[str, str]) -> str:
    caption = escape(item.caption)
    if item.kind == "text":
        return MARKDOWN.render(item.markdown)
    if item.kind == "table":
        table = _datatable(item.frame, f"table-{item.name}")
        return f"<h3>{caption}</h3>\n{table}"
    png = f'<a href="{item.path.name}">PNG</a>'
    if item.plotly is None:  # a figure drawn with what the site does not redraw
        img = f'<img src="{item.path.name}" alt="{caption}">'
        return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"
    plot = _figure_html(_with_trials(item.plotly, hover), f"figure-{number}")
    return f"<figure>{plot}<figcaption>{caption} ({png})</figcaption></figure>"


def _wall_time(rows: pd.DataFrame) -> str:
    """Summed trial time (start to end of each trial's latest attempt) and elapsed time."""
    times = rows.drop_duplicates("trial_id", keep="last")[["start_time", "end_time"]].dropna()
    if times.empty:
        return "unknown"
    summed = (times["end_time"] - times["start_time"]).sum().total_seconds()
    elapsed = (times["end_time"].max() - times["start_time"].min()).total_seconds()
    return f"{_duration(summed)} summed over trials, {_duration(elapsed)} elapsed"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


def _provenance(rows: pd.DataFrame) -> Markup:
    """Each provenance column's distinct values, with how many trials had each."""
    last = rows.drop_duplicates("trial_id", keep="last")
    facts = []
    for column in schema.PROVENANCE:
        if column in last:
            counts = last[column].astype(str).value_counts()
            facts.append((column, ", ".join(f"{v} ({n})" for v, n in counts.items())))
    return _facts(facts)


def _counts(rows: pd.DataFrame, n_trials: int) -> dict[str, int]:
    """Trials per status; ``pending`` are the study's trials not in the ledger."""
    states = rows.drop_duplicates("trial_id", keep="last")["status"].value_counts()
    counts = {status: int(states.get(status, 0)) for status in schema.STATUSES}
    counts["pending"] = n_trials - int(states.sum())
    return counts


def _assets(site: Path) -> Path:
    """Where the site's scripts go: the ``assets/`` folder beside it when there is one (the
    sites of a folder of reports, such as ``results/published/``, share it), else its own."""
    shared = site.parent / ASSETS
    return shared if shared.is_dir() else site / ASSETS


def _write_assets(assets: Path) -> None:
    """plotly.js, the itables bundle, the style sheet and the trial page's script, written
    once per folder."""
    assets.mkdir(parents=True, exist_ok=True)
    if not (assets / PLOTLY_JS).exists():
        (assets / PLOTLY_JS).write_text(get_plotlyjs())
    offline = generate_init_offline_itables_html(itables.options.dt_bundle)
    script = re.search(r"<script>(.*?)</script>", offline, re.DOTALL)
    (assets / ITABLES_JS).write_text(script.group(1))
    (assets / "site.css").write_text(CSS)
    layout, panels = _curves_layout()
    script = TRIAL_JS.render(layout=layout, panels=panels, data=TRIAL_DATA, shard=SHARD)
    (assets / TRIAL_JS_FILE).write_text(script)


def _page(title: str, body: str, assets: str, tables: bool) -> str:
    nav = [("index.html", "study"), ("trials.html", "trials")]
    return PAGE.render(title=title, body=Markup(body), assets=assets, nav=nav, tables=tables)


def _trial_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: a link to its page, what it ran, and its final numbers."""
    last = rows.drop_duplicates("trial_id", keep="last")
    varying = _varying(last, schema.CONFIG_PREFIXES)
    metrics = [c for c in ("step", "train_loss", "train_acc", "id_acc", "ood_acc") if c in last]
    table = last[["trial_id", "status", "dataset", "solver", *varying, "seed", *metrics]].copy()
    table["trial_id"] = [f'<a href="{TRIAL_PAGE}#{t}">{t}</a>' for t in table["trial_id"]]
    for column in table.select_dtypes("float").columns:
        table[column] = table[column].round(4)
    return table.rename(columns=lambda c: c.split(".", 1)[-1])


def _curves_layout() -> tuple[dict, list[tuple[str, tuple[str, ...]]]]:
    """The trial page's plotly layout (loss and accuracy against step, one panel each) and
    each panel's axis suffix with the ledger columns it draws."""
    layout: dict = {"height": 360, "margin": {"t": 30}, "plot_bgcolor": "white"}
    panels = []
    for number, (panel, columns) in enumerate(CURVES.items(), start=1):
        suffix = "" if number == 1 else str(number)
        left = (number - 1) / len(CURVES)
        layout[f"xaxis{suffix}"] = {
            "domain": [left + 0.04, left + 1 / len(CURVES) - 0.04],
            "anchor": f"y{suffix}",
            "title": {"text": "step"},
            "gridcolor": "#e8e8e8",
        }
        layout[f"yaxis{suffix}"] = {
            "anchor": f"x{suffix}",
            "title": {"text": panel},
            "gridcolor": "#e8e8e8",
        }
        panels.append((suffix, columns))
    return layout, panels


def _trial_record(trial_id: str, trial: dict[str, np.ndarray], measured: list[str]) -> dict:
    """What the trial page shows of one trial, from its columns (checkpoints in step order):
    its curves, final measurements, config and provenance."""
    last = {column: values[-1] for column, values in trial.items()}
    curves = {
        column: json_values(trial[column])
        for columns in CURVES.values()
        for column in columns
        if column in trial and pd.notna(trial[column]).any()
    }
    provenance = [
        (c, str(last[c])) for c in (*schema.PROVENANCE, "start_time", "end_time") if c in last
    ]
    return {
        "title": f"trial {trial_id}: {last['solver']} seed {last['seed']} on {last['dataset']}",
        "status": str(last["status"]),
        "error": last["error"] if isinstance(last.get("error"), str) else "",
        "step": json_values(trial["step"]),
        "curves": curves,
        "final": [(c, _short(last[c])) for c in measured if pd.notna(last[c])],
        "config": json.loads(last["config"]) if "config" in last else {},
        "provenance": provenance,
    }


def _write_trial_data(rows: pd.DataFrame, folder: Path) -> int:
    """Every trial's record, in ``folder/<first SHARD characters of its id>.js`` files
    (scripts, since a page opened from ``file://`` may load scripts but not fetch JSON): a
    trial page loads one file of ``trials / 16**SHARD`` trials. Returns the trial count."""
    folder.mkdir(exist_ok=True)
    rows = rows.sort_values(["trial_id", "step"], kind="stable")
    measured = [
        c
        for c in rows.select_dtypes("number").columns
        if not c.startswith(CONFIG_PREFIXES) and c not in CONFIG_COLUMNS
    ]
    columns = {column: rows[column].to_numpy() for column in rows.columns}
    ids = columns["trial_id"].astype(str)
    starts = [0, *(np.flatnonzero(ids[1:] != ids[:-1]) + 1).tolist()]
    shards: dict[str, dict[str, dict]] = {}
    for start, end in zip(starts, [*starts[1:], len(ids)]):
        trial = {column: values[start:end] for column, values in columns.items()}
        shards.setdefault(ids[start][:SHARD], {})[ids[start]] = _trial_record(
            ids[start], trial, measured
        )
    written = set()
    for shard, records in shards.items():
        data = json.dumps(records, separators=(",", ":"), default=str)
        written.add(f"{shard}.js")
        (folder / f"{shard}.js.tmp").write_text(f"shiftbenchTrials({data});\n")
        (folder / f"{shard}.js.tmp").replace(folder / f"{shard}.js")  # whole, for --watch
    for stale in set(os.listdir(folder)) - written:  # the site's own: older pages or records
        (folder / stale).unlink()
    return len(starts) if len(ids) else 0


def write_site(context: AnalysisContext, store_dir: Path) -> Site:
    """Write the study's site beside its report: ``index.html`` (state, provenance, one
    section per analysis), ``trials.html`` (every trial), and ``trial.html``, the page of
    the trial named after ``#`` (its record read from ``trials/``). The scripts go to the
    folder's shared ``assets/`` when it has one (see ``_assets``), else to the site's own."""
    study, report, rows = context.study, context.report, context.ledger
    site = report.out
    assets = _assets(site)
    _write_assets(assets)
    if assets != site / ASSETS:
        shutil.rmtree(site / ASSETS, ignore_errors=True)  # a copy from before it was shared
    href = Path(os.path.relpath(assets, site)).as_posix() + "/"
    hover = _hover_text(rows)
    sections: dict[str, list[str]] = {}
    for number, item in enumerate(report.items):
        sections.setdefault(item.analysis, []).append(_item_html(item, number, hover))
    counts = _counts(rows, len(study.trial_numbers))
    state = pd.DataFrame([counts]).to_html(index=False, border=0, classes="facts")
    body = STUDY.render(
        description=study.description,
        reproduce=(
            f"shiftbench run {study.path} --store {store_dir}\n"
            f"shiftbench report {study.path} --store {store_dir} --out {site} --html"
        ),
        counts=Markup(state),
        wall=_wall_time(rows),
        provenance=_provenance(rows),
        sections=[(a, [Markup(h) for h in html]) for a, html in sections.items()],
    )
    (site / "index.html").write_text(_page(report.title, body, href, tables=True))
    trials = _datatable(_trial_table(rows), "table-trials", links=True)
    (site / "trials.html").write_text(_page(f"{study.name}: trials", trials, href, tables=True))
    trial_page = TRIAL.render(assets=href)
    (site / TRIAL_PAGE).write_text(_page("trial", trial_page, href, tables=False))
    n_trials = _write_trial_data(rows, site / TRIAL_DATA)
    html = [site / "index.html", site / "trials.html", site / TRIAL_PAGE]
    files = [*html, *(site / TRIAL_DATA).iterdir(), *(i.path for i in report.items if i.path)]
    return Site(
        index=site / "index.html",
        pages=len(html),
        trials=n_trials,
        size=sum(f.stat().st_size for f in files),
        assets=assets,
        assets_size=sum(f.stat().st_size for f in assets.iterdir()),
    )
