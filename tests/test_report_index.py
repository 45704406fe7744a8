"""The index of a folder of reports: every report as a page linked to its site, each study's
ledger state in a store, and the rebuild of sites that share one ``assets/`` folder, checked
in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import SHIFTBENCH, site_records, watched_page
from playwright.sync_api import expect

from shiftbench.report.index import write_index


def test_index_lists_reports_and_ledger_states(site):
    out, _ = site
    folder = out.parent
    done = subprocess.run(
        [str(SHIFTBENCH), "index", str(folder)], check=True, capture_output=True, text=True
    )
    assert done.stdout.strip() == f"index written to {folder / 'index.html'}"
    index = (folder / "index.html").read_text()
    assert '<a href="report/report.html">report</a>' in index
    assert '<a href="report/index.html">site</a>' in index
    page = (out / "report.html").read_text()
    assert '<a href="../index.html">all reports</a>' in page
    assert "<table>" in page and "Test-environment accuracy per optimizer" in page
    # a store: each study's ledger state, linked to the report of the same name
    store_index = write_index(folder / "store")
    assert re.search(
        r"<td>sitetiny</td><td>8</td>\s*<td>8</td><td>0</td>", store_index.read_text()
    )
    (folder / "store" / "reports" / "sitetiny").mkdir(parents=True)
    shutil.copy(out / "report.md", folder / "store" / "reports" / "sitetiny")
    linked = write_index(folder / "store").read_text()
    assert '<a href="reports/sitetiny/report.html">sitetiny</a>' in linked


def test_published_index_is_current(tmp_path):
    """results/published/index.html (which the README links) and its report pages are what
    `shiftbench index results/published` writes from the committed reports."""
    published = Path(__file__).parents[1] / "results" / "published"
    shutil.copytree(published, tmp_path / "published")
    write_index(tmp_path / "published")
    for page in [
        Path("index.html"),
        *(p.relative_to(published) for p in published.rglob("*.html")),
    ]:
        assert (tmp_path / "published" / page).read_text() == (published / page).read_text(), page


def test_index_rebuilds_sites_that_share_assets(site, browser, tmp_path):
    out, rows = site
    folder = out.parent
    published = tmp_path / "published"
    shutil.copytree(out, published / "sitetiny")
    (published / "elsewhere").mkdir()  # a report without a study file: kept as it is
    (published / "elsewhere" / "report.md").write_text("# elsewhere\n")
    rebuild = ["index", str(published), "--rebuild", str(folder / "store")]
    done = subprocess.run(
        [str(SHIFTBENCH), *rebuild, "--benchmarks", str(folder)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    kept, rebuilt, index = done.stdout.splitlines()
    assert kept == f"kept {published / 'elsewhere'}: {folder / 'elsewhere.yml'}"
    assert re.fullmatch(
        rf"rebuilt from {folder / 'store'}: site written to {published / 'sitetiny/index.html'} "
        rf"\(3 pages, 8 trials, [0-9.]+ MB; scripts [0-9.]+ MB in {published / 'assets'}\)",
        rebuilt,
    )
    assert index == f"index written to {published / 'index.html'}"
    study = published / "sitetiny"
    assert not (study / "assets").exists()  # the copy it had before is gone
    assets = sorted(p.name for p in (published / "assets").iterdir())
    assert assets == ["itables.js", "plotly.min.js", "site.css", "trial.js"]
    for name in ("index.html", "trials.html", "trial.html"):
        assert '<script src="../assets/plotly.min.js"></script>' in (study / name).read_text()
    assert set(site_records(study)) == set(rows["trial_id"])
    # from file://, the shared scripts load: a trial page and the study's tables render
    page, problems, fetched = watched_page(browser)
    trial_id = sorted(set(rows["trial_id"]))[-1]
    page.goto(f"{(study / 'trial.html').as_uri()}#{trial_id}")
    page.wait_for_selector("#curves .scatterlayer .trace")
    expect(page.locator("h1")).to_contain_text(f"trial {trial_id}: ")
    page.goto((study / "index.html").as_uri())
    page.wait_for_selector("#table-id_ood_table.dataTable tbody tr td")
    assert problems == []
    assert [u for u in fetched if not u.startswith(("file:", "data:", "blob:"))] == []
