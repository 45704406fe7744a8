"""The matplotlib-to-plotly translator: each figure kind the analyses draw is redrawn with
the same numbers, and what it cannot redraw leaves the PNG."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest

from shiftbench.report.build import Report
from shiftbench.report.plotly_figures import plotly_figure


def test_scatter_keeps_points_and_trial_ids():
    fig, axes = plt.subplots(1, 2)
    axes[0].scatter([0.1, 0.2], [0.3, 0.4], s=25, color="red", label="sgd", urls=["a1", "b2"])
    axes[1].scatter([0.5], [0.6], s=25, color="red", label="sgd", urls=["c3"])
    axes[1].set_title("rotated\ntest_env=0")
    figure = plotly_figure(fig)
    first, second = figure["data"]
    assert first["x"] == [0.1, 0.2] and first["y"] == [0.3, 0.4]
    assert first["customdata"] == ["a1", "b2"] and second["customdata"] == ["c3"]
    assert (first["xaxis"], second["xaxis"], second["yaxis"]) == ("x", "x2", "y2")
    # one legend entry per label across panels, toggled together
    assert (first["showlegend"], second["showlegend"]) == (True, False)
    assert first["legendgroup"] == second["legendgroup"] == "sgd"
    assert first["marker"]["color"] == "rgba(255,0,0,1)"
    assert first["marker"]["size"] == pytest.approx(5 * 100 / 72)
    # panels side by side, where matplotlib put them; the title as an annotation
    left, right = figure["layout"]["xaxis"]["domain"], figure["layout"]["xaxis2"]["domain"]
    assert left[1] < right[0]
    assert figure["layout"]["annotations"][0]["text"] == "rotated<br>test_env=0"
    plt.close(fig)


def test_lines_bars_errorbars_bands_and_axes():
    fig, ax = plt.subplots()
    ax.step([0, 1, 2], [1.0, 0.5, np.nan], where="post", ls="--", label="psi")
    ax.bar([0, 1], [0.7, 0.9], width=0.4, yerr=[0.05, 0.1], label="oracle")
    ax.fill_between([0, 1], [0.1, 0.2], [0.3, 0.4], alpha=0.5)
    ax.set_xticks([0, 1], ["adam", "sgd"], rotation=45)
    ax.set_yscale("log")
    ax.set(xlabel="solver", ylabel="accuracy")
    figure = plotly_figure(fig)
    kinds = {(t["type"], t.get("fill"), t.get("mode")) for t in figure["data"]}
    assert ("bar", None, None) in kinds and ("scatter", "toself", "lines") in kinds
    bar = next(t for t in figure["data"] if t["type"] == "bar")
    assert bar["x"] == pytest.approx([0, 1]) and bar["y"] == pytest.approx([0.7, 0.9])
    assert bar["width"] == pytest.approx([0.4, 0.4]) and bar["base"] == [0, 0]
    step = next(t for t in figure["data"] if t.get("name") == "psi")
    assert step["y"] == [1.0, 0.5, None] and step["line"]["shape"] == "hv"
    assert step["line"]["dash"] == "dash"
    # the error bars: one segment per bar, from mean - err to mean + err
    bars = next(t for t in figure["data"] if t.get("hoverinfo") == "skip" and "fill" not in t)
    assert bars["y"] == pytest.approx([0.65, 0.75, None, 0.8, 1.0, None])
    band = next(t for t in figure["data"] if t.get("fill") == "toself")
    assert min(band["y"][:-1]) == pytest.approx(0.1) and max(band["y"][:-1]) == 0.4
    assert band["fillcolor"].endswith(",0.5)")
    xaxis, yaxis = figure["layout"]["xaxis"], figure["layout"]["yaxis"]
    assert xaxis["ticktext"] == ["adam", "sgd"] and xaxis["tickvals"] == [0, 1]
    assert xaxis["tickangle"] == -45 and xaxis["title"]["text"] == "solver"
    assert yaxis["type"] == "log"
    assert yaxis["range"] == pytest.approx(np.log10(ax.get_ylim()))
    plt.close(fig)


def test_heatmap_keeps_values_and_rows():
    values = np.array([[0.5, -0.2, 0.1], [0.0, 1.0, np.nan]])
    fig, ax = plt.subplots()
    image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(image)
    ax.text(0.5, 0.5, "note", ha="center", transform=ax.transAxes)
    figure = plotly_figure(fig)
    (heat,) = figure["data"]  # the colorbar's own axes is not a panel
    assert heat["z"]["dtype"] == "f4" and heat["z"]["shape"] == "2, 3"
    z = np.frombuffer(base64.b64decode(heat["z"]["bdata"]), "<f4").reshape(2, 3)
    np.testing.assert_array_equal(z, np.float32(values))  # NaN where NaN
    assert heat["x"] == [0, 1, 2] and heat["y"] == [0, 1]  # row 0 at the top, as imshow
    assert figure["layout"]["yaxis"]["range"] == [1.5, -0.5]
    assert (heat["zmin"], heat["zmax"], heat["showscale"]) == (-1, 1, True)
    assert figure["layout"]["annotations"][0]["text"] == "note"
    assert figure["layout"]["annotations"][0]["x"] == pytest.approx(0.5)
    plt.close(fig)


def test_unnamed_lines_of_one_style_are_one_trace():
    fig, ax = plt.subplots()
    for i in range(3):  # as a sign-error figure draws them: alternating styles
        ax.plot([i - 0.5, i + 0.5], [i, i], "k", lw=0.8)
        ax.plot([i - 0.5, i + 0.5], [i + 5, i + 5], color="limegreen", lw=0.8)
    ax.plot([0, 1], [6, 6], "k", lw=0.8, label="named")
    ax.scatter([0, 1], [1, 2], c=["red", "blue"])
    ax.scatter([0, 1], [3, 4], c=["red", "blue"])
    figure = plotly_figure(fig)
    lines = [t for t in figure["data"] if t["mode"] == "lines"]
    assert [len(t["x"]) for t in lines] == [8, 8, 2]
    assert lines[0]["x"] == lines[1]["x"] == [-0.5, 0.5, None, 0.5, 1.5, None, 1.5, 2.5]
    assert lines[0]["y"] == [0, 0, None, 1, 1, None, 2, 2]
    assert lines[1]["y"] == [5, 5, None, 6, 6, None, 7, 7]
    assert lines[2]["name"] == "named"
    # points coloured one by one stay one trace per scatter
    assert [len(t["x"]) for t in figure["data"] if t["mode"] == "markers"] == [2, 2]
    plt.close(fig)


def test_rules_boxes_violins_and_suptitle_keep_their_data():
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0, 1, 2, 3], [1, 2, 3, 4])
    left.axhline(0.5, color="0.6", lw=0.6)
    values = [np.array([1.0, 2.0, 3.0, 4.0, 10.0]), np.array([2.0, 2.5, 3.0])]
    boxes = right.boxplot(values)
    violins = left.violinplot(values, showmedians=True)
    fig.suptitle("sign error")
    figure = plotly_figure(fig)
    assert figure["layout"]["title"]["text"] == "sign error"
    # the rule spans the panel's x range in data units, not matplotlib's axes fractions
    rule = next(t for t in figure["data"] if t["y"] == pytest.approx([0.5, 0.5]))
    assert rule["x"] == pytest.approx(left.get_xlim())
    traced = [
        (t["x"][i], t["y"][i])
        for t in figure["data"]
        for i in range(len(t["x"]))
        if t["x"][i] is not None
    ]
    # every box-plot line (whiskers, caps, medians, boxes, fliers) and every violin
    # outline and bar, point by point
    drawn = [line.get_xydata() for lines in boxes.values() for line in lines]
    drawn += [path.vertices for body in violins["bodies"] for path in body.get_paths()]
    drawn += [np.concatenate(violins[k].get_segments()) for k in ("cbars", "cmedians")]
    for points in drawn:
        for x, y in points:
            assert any(x == pytest.approx(a) and y == pytest.approx(b) for a, b in traced)
    plt.close(fig)


@pytest.mark.parametrize(
    "draw",
    [
        lambda fig, ax: ax.pcolormesh(np.ones((2, 2))),
        lambda fig, ax: fig.text(0.1, 0.1, "a figure text"),
        lambda fig, ax: ax.twinx().plot([0, 1], [5, 6]),
        lambda fig, ax: ax.set_title("left", loc="left"),
        lambda fig, ax: ax.imshow(np.ones((2, 2, 3))),
    ],
    ids=["mesh", "figure-text", "twin-axes", "left-title", "rgb-image"],
)
def test_what_is_not_redrawn_leaves_the_png(draw, tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 2])
    draw(fig, ax)
    assert plotly_figure(fig) is None
    report = Report(tmp_path, "demo", interactive=True)
    report.analysis = "partial"
    report.figure("f", fig, "a figure")
    assert report.items[0].plotly is None and report.items[0].path.exists()
