"""Reports: one table in Markdown, LaTeX (booktabs, escaped) and CSV with the same numbers,
figures as PNG, and the report index."""

import re

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from shiftbench.report.build import Report, build_report, fit_width, latex_escape
from shiftbench.spec.study import parse_study

FRAME = pd.DataFrame(
    {
        "dataset": ["colored_digits", "rotated_digits", "rotated_digits"],
        "test_env": [2, 0, 0],
        "solver": ["sgd", "adam", "momentum"],
        "id_acc_mean": [0.71234, 0.98765, 0.5],
        "ood_acc_std": [0.0123, np.nan, 0.33333],
        "seeds": [2, 2, 1],
    }
)


def markdown_rows(text):
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return header, body


def latex_rows(text):
    body = text.split("\\midrule")[1].split("\\bottomrule")[0]
    rows = [line.strip().removesuffix("\\\\").strip() for line in body.strip().splitlines()]
    return [[c.strip() for c in r.split("&")] for r in rows]


@pytest.fixture
def written(tmp_path):
    report = Report(tmp_path / "out", "study: demo")
    markdown = report.table("id_ood_table", FRAME, "ID vs OOD (50% of runs) & more")
    return report, markdown


def test_table_writes_three_formats_with_the_same_numbers(written):
    report, markdown = written
    out = report.out
    assert {p.name for p in report.files} == {
        "id_ood_table.md",
        "id_ood_table.tex",
        "id_ood_table.csv",
    }
    # CSV: the full-precision numbers, read back
    back = pd.read_csv(out / "id_ood_table.csv")
    pd.testing.assert_frame_equal(back, FRAME)
    # Markdown: the same rows, floats with 3 digits, NaN blank
    header, body = markdown_rows((out / "id_ood_table.md").read_text())
    assert header == list(FRAME.columns)
    assert (out / "id_ood_table.md").read_text().startswith("ID vs OOD (50% of runs) & more")
    for cells, (_, expected) in zip(body, FRAME.iterrows(), strict=True):
        assert cells[0] == expected["dataset"] and int(cells[1]) == expected["test_env"]
        assert cells[3] == f"{expected['id_acc_mean']:.3f}"
        assert cells[4] == (
            "" if np.isnan(expected["ood_acc_std"]) else f"{expected['ood_acc_std']:.3f}"
        )
        assert int(cells[5]) == expected["seeds"]
    assert markdown in (out / "id_ood_table.md").read_text()
    # LaTeX: the same cells, escaped
    rows = latex_rows((out / "id_ood_table.tex").read_text())
    for cells, (_, expected) in zip(rows, FRAME.iterrows(), strict=True):
        assert cells[0] == expected["dataset"].replace("_", r"\_")
        assert float(cells[3]) == pytest.approx(expected["id_acc_mean"], abs=5e-4)
        assert int(cells[5]) == expected["seeds"]


def test_latex_is_booktabs_and_escaped(written):
    report, _ = written
    tex = (report.out / "id_ood_table.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert "\\hline" not in tex
    assert r"id\_acc\_mean" in tex and r"colored\_digits" in tex
    assert re.search(r"(?<!\\)_", tex.replace("\\label{tab:id_ood_table}", "")) is None
    assert r"\caption{ID vs OOD (50\% of runs) \& more}" in tex
    assert "\\label{tab:id_ood_table}" in tex
    assert "\\begin{table}[t]" in tex


def test_latex_escape():
    assert latex_escape("a_b%c&d#e$f") == r"a\_b\%c\&d\#e\$f"
    assert latex_escape(3) == "3"


def test_figure_writes_a_png_and_the_index(tmp_path):
    report = Report(tmp_path / "r", "demo")
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    path = report.figure("curve", fig, "A curve")
    assert path == tmp_path / "r" / "curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
    assert not plt.fignum_exists(fig.number)  # closed
    report.text("Some **text**.\n\n")
    index = report.finish()
    text = index.read_text()
    assert text.startswith("# demo\n")
    assert "![A curve](curve.png)" in text and "Some **text**." in text
    assert text.index("A curve") < text.index("Some **text**")


def test_build_report_without_results_names_the_study(tmp_path):
    study = parse_study(
        {
            "name": "empty",
            "datasets": {"colored_digits": {}},
            "solvers": {"sgd": {}},
            "analyses": ["id_ood_table"],
        },
        tmp_path / "empty.yml",
    )
    with pytest.raises(ValueError, match=r"empty\.yml.*no results"):
        build_report(study, tmp_path / "store")


def test_the_printed_table_fits_100_columns_and_the_files_keep_full_labels(tmp_path):
    label = "adam[" + ",".join(f"hp{i}=0.{i:03d}" for i in range(11)) + "]"
    assert len(label) > 110
    frame = pd.DataFrame(
        {
            "dataset": ["colored_digits", "rotated_digits"],
            "solver": ["adam", "sgd"],
            "id_acc_mean": [0.91234, 0.5],
            "ood_acc_mean": [0.31234, 0.25],
            "label": [label, label.replace("adam", "sgd")],
        }
    )
    report = Report(tmp_path, "t")
    report.table("wide", frame, "A wide table")
    printed = "\n".join(report.printed).splitlines()
    assert max(map(len, printed)) <= 100
    rows = [line.split() for line in printed if line.startswith("colored_digits")]
    assert len(rows) == 1 and rows[0][1:4] == ["adam", "0.912", "0.312"]
    assert rows[0][4].startswith("adam[hp0=0.000") and rows[0][4].endswith("~")
    assert pd.read_csv(tmp_path / "wide.csv")["label"].tolist() == frame["label"].tolist()
    assert label in (tmp_path / "wide.md").read_text() and label in report.sections[0]


def test_printed_tables_show_missing_values_blank():
    frame = pd.DataFrame({"n": pd.array([1, None], dtype="Int64"), "name": ["a", None]})
    assert fit_width(frame, 100) == "n  name\n-  ----\n1  a\n"
