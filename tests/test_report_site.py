"""The HTML site: the study site built from a tiny real run (the report's own tables and
figures, a page per trial, nothing fetched), and the site in a real headless Chromium."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml
from conftest import SHIFTBENCH, SITE_STUDY, site_records, wait_for, watched_page
from playwright.sync_api import expect

from shiftbench.report.build import Report
from shiftbench.report.site import ASSETS, PLOTLY_JS


def test_report_items_are_what_markdown_shows(tmp_path):
    report = Report(tmp_path, "demo", interactive=True)
    report.analysis = "table_and_figure"
    frame = pd.DataFrame({"solver": ["sgd"], "acc": [0.12345]})
    markdown = report.table("t", frame, "a table")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [2, 3])
    report.figure("f", fig, "a figure")
    table, figure = report.items
    assert table.analysis == figure.analysis == "table_and_figure"
    assert table.frame.to_dict("records") == [{"solver": "sgd", "acc": "0.123"}]
    assert "| sgd      | 0.123 |" in markdown
    assert figure.path == tmp_path / "f.png" and figure.path.exists()
    assert figure.plotly["data"][0]["y"] == [2, 3]


def _figures(page: str) -> list[dict]:
    """The plotly figures of a page, as the page hands them to plotly.js."""
    decoder, figures = json.JSONDecoder(), []
    for call in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", page):
        data, end = decoder.raw_decode(page, call.end())
        layout, _ = decoder.raw_decode(page, re.compile(r",\s*").match(page, end).end())
        figures.append({"data": data, "layout": layout})
    return figures


def test_site_shows_the_report_and_every_trial(site):
    out, rows = site
    index = (out / "index.html").read_text()
    trials = set(rows["trial_id"])
    records = site_records(out)
    assert set(records) == trials
    # the state: 8 trials, all done; one section per analysis, in the study's order
    assert re.search(r"<td>8</td>\s*<td>0</td>\s*<td>0</td>\s*<td>0</td>\s*<td>0</td>", index)
    trial = rows.drop_duplicates("trial_id")
    summed = (trial["end_time"] - trial["start_time"]).sum().total_seconds()
    elapsed = (trial["end_time"].max() - trial["start_time"].min()).total_seconds()
    assert f"Wall time: {summed:.1f} s summed over trials, {elapsed:.1f} s elapsed." in index
    sections = re.findall(r'<h2 id="([a-z_0-9]+)">', index)
    assert sections == ["state", "provenance", *SITE_STUDY["analyses"]]
    # the table is the Markdown's: same cells
    table = pd.read_csv(out / "id_ood_table.csv")
    for value in table["ood_acc_mean"]:
        assert f"{value:.3f}" in index
    # the scatter: every done trial once, its hover naming it, its hyperparameters and id
    scatter = next(f for f in _figures(index) if any("customdata" in t for t in f["data"]))
    points = [t for t in scatter["data"] if "customdata" in t]
    assert sorted(i for t in points for i in t["customdata"]) == sorted(trials)
    lrs = rows.drop_duplicates("trial_id").set_index("trial_id")["hp.lr"]
    for trace in points:
        for trial_id, text in zip(trace["customdata"], trace["text"]):
            assert text.startswith(f"trial {trial_id}<br>")
            assert f"lr={lrs[trial_id]:.4g}" in text
    # a trial's record: its curves at every checkpoint, its config, its final numbers
    trial_id = sorted(trials)[0]
    record = records[trial_id]
    mine = rows[rows["trial_id"] == trial_id].sort_values("step")
    assert record["curves"]["ood_acc"] == pytest.approx(mine["ood_acc"].tolist())
    assert record["step"] == mine["step"].tolist() == [0, 10, 20]
    assert record["config"] == json.loads(mine["config"].iloc[0])
    assert ["ood_acc", f"{mine['ood_acc'].iloc[-1]:.4g}"] in record["final"]
    assert record["title"].startswith(f"trial {trial_id}: ")


def test_site_fetches_nothing(site):
    out, _ = site
    for page in [out / "index.html", out / "trials.html", out / "trial.html"]:
        text = page.read_text()
        # what a browser loads by itself: scripts, images, style sheets, modules
        assert not re.search(r"""(src=|<link[^>]*href=)["']?(https?:)?//""", text), page
        assert not re.search(r"""import\s.*from\s+['"]https?:""", text), page
    assert not re.search(r"https?://(www\.)?unpkg|cdn", (out / "assets/itables.js").read_text())


def _cells(page, table: str, name: str):
    """The cells of a column of a DataTable, in the order shown."""
    headers = page.locator(f"#{table}_wrapper thead th").all_inner_texts()
    position = [h.strip() for h in headers].index(name) + 1
    return page.locator(f"#{table} tbody tr td:nth-child({position})")


def _column(page, table: str, name: str) -> list[str]:
    return _cells(page, table, name).all_inner_texts()


def test_site_in_a_browser(site, browser, tmp_path):
    out, rows = site
    page, problems, fetched = watched_page(browser)
    page.goto((out / "index.html").as_uri())
    table = "table-id_ood_table"
    page.wait_for_selector(f"#{table}.dataTable tbody tr td")
    # sorting: a click on a header's sort arrow sorts by it, a second click reverses
    header = page.locator(f"#{table}_wrapper thead th", has_text="ood_acc_mean").first
    header = header.locator(".dt-column-order")
    header.click()
    ascending = _column(page, table, "ood_acc_mean")
    assert [float(v) for v in ascending] == sorted(map(float, ascending)) != []
    assert len(ascending) == 4
    header.click()
    expect(_cells(page, table, "ood_acc_mean")).to_have_text(ascending[::-1])
    # filtering: the solver column's filter box keeps the matching rows
    solver = page.locator(f"#{table}_wrapper .dt-scroll-foot input[placeholder=solver]")
    solver.press_sequentially("adam")
    expect(_cells(page, table, "solver")).to_have_text(["adam", "adam"])
    # the scatter renders every trial, and a hover over a point names its trial
    scatter = page.locator(".js-plotly-plot", has=page.locator(".scatterlayer .point")).first
    assert scatter.locator(".scatterlayer .point").count() == rows["trial_id"].nunique()
    point = scatter.locator(".scatterlayer .point").first
    point.scroll_into_view_if_needed()
    point = point.bounding_box()
    x, y = point["x"] + point["width"] / 2, point["y"] + point["height"] / 2
    page.mouse.move(x, y)
    hover = page.locator(".hoverlayer .hovertext").first
    hover.wait_for()
    named = re.search(r"trial ([0-9a-f]{16})", hover.text_content())
    assert named and named.group(1) in set(rows["trial_id"])
    page.screenshot(path=tmp_path / "site.png")  # the viewport, with the hover shown
    # a click on the point opens that trial's page, whose curves render
    page.mouse.click(x, y)
    page.wait_for_url(f"**/trial.html#{named.group(1)}")
    expect(page.locator("h1")).to_contain_text(f"trial {named.group(1)}: ")
    page.wait_for_selector("#curves .scatterlayer .trace")
    # the trial list links every trial's page; the page follows a change of # alone
    page.goto((out / "trials.html").as_uri())
    page.wait_for_selector("#table-trials.dataTable tbody tr td a")
    link = page.locator("#table-trials tbody a").first
    target = link.inner_text()
    link.click()
    page.wait_for_url(f"**/trial.html#{target}")
    expect(page.locator("h1")).to_contain_text(f"trial {target}: ")
    other = next(t for t in sorted(set(rows["trial_id"])) if t != target)
    page.evaluate(f"location.hash = '{other}'")
    expect(page.locator("h1")).to_contain_text(f"trial {other}: ")
    solver = rows.loc[rows["trial_id"] == other, "solver"].iloc[0]
    expect(page.locator("#config")).to_contain_text(f'"solver": "{solver}"')
    missing = other[:2] + "-not-a-trial"
    page.evaluate(f"location.hash = '{missing}'")
    expect(page.locator("#status")).to_have_text(f"no trial {missing} in this study")
    assert problems == []
    assert [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))] == []
    print(f"screenshot: {tmp_path / 'site.png'}")


@pytest.mark.slow
def test_watch_rebuilds_as_the_ledger_grows(tmp_path, driver):
    study = tmp_path / "sitetiny.yml"
    study.write_text(yaml.safe_dump(SITE_STUDY))
    store_dir, out = tmp_path / "store", tmp_path / "report"
    where = ("--store", str(store_dir))
    # not one of the driver's processes: it stops those after each run
    watch = ["report", str(study), *where, "--out", str(out), "--html", "--watch", "0.2"]
    watcher = subprocess.Popen(
        [str(SHIFTBENCH), *watch], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert driver.run("run", str(study), *where, "--workers", "0", "--max-trials", "3")[0] == 1
    wait_for(lambda: len(site_records(out)) == 3, "the site of the first 3 trials", 120)
    assert driver.run("run", str(study), *where, "--workers", "0")[0] == 0
    wait_for(lambda: len(site_records(out)) == 8, "the site of all 8 trials", 120)
    watcher.send_signal(signal.SIGINT)
    output, _ = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, output
    assert output.splitlines()[0].startswith(f"waiting: {study}: no results")
    assert "rebuilt: site written to" in output and output.rstrip().endswith("stopped watching")


PUBLISHED = Path(__file__).parents[1] / "results" / "published"


@pytest.mark.parametrize(
    "study", sorted(p.parent.name for p in PUBLISHED.glob("*/trial.html")) or ["none"]
)
def test_published_site_in_a_browser(study, browser):
    """Each committed site, as `shiftbench index results/published --rebuild` writes it: its
    scripts from the shared assets, every figure drawn, a trial page from its data file."""
    site = PUBLISHED / study
    assert (site / "trial.html").exists(), "no published site"
    assert not (site / ASSETS).exists() and (PUBLISHED / ASSETS / PLOTLY_JS).exists()
    page, problems, fetched = watched_page(browser)
    page.goto((site / "index.html").as_uri())
    drawn = _figures((site / "index.html").read_text())
    expect(page.locator(".plotly-graph-div.js-plotly-plot")).to_have_count(len(drawn))
    heatmaps = sum(t["type"] == "heatmap" for figure in drawn for t in figure["data"])
    expect(page.locator(".heatmaplayer image")).to_have_count(heatmaps)
    trial_id = sorted(site_records(site))[0]
    page.goto(f"{(site / 'trial.html').as_uri()}#{trial_id}")
    page.wait_for_selector("#curves .scatterlayer .trace")
    expect(page.locator("h1")).to_contain_text(f"trial {trial_id}: ")
    assert problems == []
    assert [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))] == []
