"""The matplotlib-to-plotly translator of the HTML site: ``plotly_figure`` redraws a
matplotlib figure from its artists (lines, scatters, bars, fills, heat maps, texts, axes), so
the site's interactive figures show exactly what the report's PNGs show. It returns None for
a figure with anything it does not redraw (an unknown artist, twin axes, an RGB image), and
the site then shows the PNG alone.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from matplotlib.text import Text

DASHES = {"--": "dash", ":": "dot", "-.": "dashdot"}
STEPS = {"steps-post": "hv", "steps-pre": "vh", "steps": "vh", "steps-mid": "hvh"}
SYMBOLS = {"o": "circle", "s": "square", "^": "triangle-up", "v": "triangle-down", "D": "diamond"}
SYMBOLS |= {"x": "x-thin", "+": "cross-thin", "_": "line-ew", "|": "line-ns", "*": "star"}
NO_STYLE = ("None", "none", "", " ", None)
PX_PER_PT = 100 / 72  # plotly draws at about 100 px per matplotlib inch
DIGITS = 7  # significant digits of a plotted value: finer than a hover (4) or a pixel shows
MIN_HEIGHT = 320  # px: a short matplotlib figure (a heat map of few rows) stays readable


def _colour(colour, alpha: float | None = None) -> str:
    r, g, b, a = mcolors.to_rgba(colour, alpha)
    return f"rgba({round(r * 255)},{round(g * 255)},{round(b * 255)},{a:.3g})"


def json_values(values: Iterable) -> list:
    """JSON-ready values: floats to ``DIGITS`` significant digits with NaN as null, or the
    labels of a categorical axis."""
    array = np.ma.filled(np.ma.asarray(values, dtype=object), None).ravel()
    try:
        floats = np.asarray(array, dtype=float)
    except (TypeError, ValueError):
        return [str(v) for v in array]
    return [float(f"{v:.{DIGITS}g}") if np.isfinite(v) else None for v in floats]


def _one_or_many(values) -> object:
    """One value for every point, or one per point (matplotlib keeps one when all share it)."""
    values = list(values)
    return values if len(values) > 1 else values[0]


def _polyline(segments: Iterable[np.ndarray]) -> tuple[list, list]:
    """Several (n, 2) arrays as one x/y pair with null between them."""
    x: list = []
    y: list = []
    for segment in segments:
        points = np.asarray(segment, dtype=float).reshape(-1, 2)
        x += [*json_values(points[:, 0]), None]
        y += [*json_values(points[:, 1]), None]
    return x, y


def _outline(segments: Iterable[np.ndarray], name: str | None, **style) -> dict:
    """Line segments or polygons as one plotly line trace (no hover: they are not data)."""
    x, y = _polyline(segments)
    return {"type": "scatter", "mode": "lines", "x": x, "y": y, "name": name} | {
        "hoverinfo": "skip",
        **style,
    }


def _label(artist) -> str | None:
    label = str(artist.get_label())
    return None if label.startswith("_") else label


def _line_traces(ax: Axes) -> list[dict]:
    traces = []
    for line in ax.get_lines():
        styled = line.get_linestyle() not in NO_STYLE
        marked = line.get_marker() not in NO_STYLE
        if not line.get_visible() or not (styled or marked):
            continue
        colour = _colour(line.get_color(), line.get_alpha())
        symbol = SYMBOLS.get(str(line.get_marker()), "circle")
        x, y = line.get_xdata(), line.get_ydata()
        if line.get_transform() != ax.transData:  # axhline, axvline: x or y in axes fractions
            x, y = (line.get_transform() - ax.transData).transform(line.get_xydata()).T
        traces.append(
            {
                "type": "scatter",
                "x": json_values(x),
                "y": json_values(y),
                "mode": "+".join(m for m, on in (("lines", styled), ("markers", marked)) if on),
                "name": _label(line),
                "line": {
                    "color": colour,
                    "width": line.get_linewidth() * PX_PER_PT,
                    "dash": DASHES.get(line.get_linestyle(), "solid"),
                    "shape": STEPS.get(line.get_drawstyle(), "linear"),
                },
                "marker": {
                    "symbol": symbol,
                    "size": line.get_markersize() * PX_PER_PT,
                    "color": _colour(line.get_markerfacecolor(), line.get_alpha()),
                    "line": {"color": colour, "width": 1 if symbol.startswith("line") else 0},
                },
            }
        )
    return traces


def _collection_traces(ax: Axes) -> list[dict]:
    traces = []
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        faces = [_colour(c) for c in coll.get_facecolors()] or ["rgba(0,0,0,0)"]
        if isinstance(coll, PathCollection):
            urls = coll.get_urls()
            trace = {
                "type": "scatter",
                "mode": "markers",
                "x": json_values(coll.get_offsets()[:, 0]),
                "y": json_values(coll.get_offsets()[:, 1]),
                "name": _label(coll),
                "marker": {
                    "color": _one_or_many(faces),
                    "size": _one_or_many(np.sqrt(coll.get_sizes()) * PX_PER_PT),
                },
            }
            if any(urls):
                trace["customdata"] = list(urls)
            traces.append(trace)
        elif isinstance(coll, LineCollection):
            width = coll.get_linewidths()
            line = {
                "color": _colour(coll.get_colors()[0]),
                "width": float(width[0] if len(width) else 1) * PX_PER_PT,
            }
            traces.append(_outline(coll.get_segments(), _label(coll), line=line))
        elif isinstance(coll, PolyCollection):
            paths = [path.vertices for path in coll.get_paths()]
            fill = {"fill": "toself", "fillcolor": faces[0], "line": {"width": 0}}
            traces.append(_outline(paths, _label(coll), **fill))
    return traces


def _patch_traces(ax: Axes) -> list[dict]:
    """Bars of ``ax.bar`` as plotly bars; any other patch as a filled outline."""
    traces, in_bars = [], set()
    for container in ax.containers:
        if not isinstance(container, BarContainer):
            continue
        rects = container.patches
        in_bars |= {id(r) for r in rects}
        vertical = container.orientation == "vertical"
        centre = [
            r.get_x() + r.get_width() / 2 if vertical else r.get_y() + r.get_height() / 2
            for r in rects
        ]
        length = [r.get_height() if vertical else r.get_width() for r in rects]
        traces.append(
            {
                "type": "bar",
                "orientation": "v" if vertical else "h",
                "name": _label(container),
                "marker": {"color": [_colour(r.get_facecolor()) for r in rects]},
                "x" if vertical else "y": centre,
                "y" if vertical else "x": length,
                "base": [r.get_y() if vertical else r.get_x() for r in rects],
                "width": [r.get_width() if vertical else r.get_height() for r in rects],
            }
        )
    to_data = ax.transData.inverted()
    for patch in ax.patches:
        if id(patch) in in_bars or not patch.get_visible():
            continue
        fill = {"fill": "toself", "fillcolor": _colour(patch.get_facecolor())}
        line = {"color": _colour(patch.get_edgecolor()), "width": 1}
        verts = [to_data.transform(patch.get_verts())]
        traces.append(_outline(verts, _label(patch), line=line, **fill))
    return traces


def _typed(values: np.ndarray) -> dict:
    """A 2-D array as a plotly.js typed array (float32, as base64: about 5 characters a
    value, where decimals take about 10; NaN stays NaN, a gap)."""
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return {
        "dtype": "f4",
        "bdata": base64.b64encode(data).decode(),
        "shape": "{}, {}".format(*values.shape),
    }


def _image_traces(ax: Axes) -> list[dict]:
    traces = []
    for image in ax.get_images():
        values = np.ma.filled(np.ma.asarray(image.get_array(), dtype=float), np.nan)
        left, right, bottom, top = image.get_extent()
        first, last = (top, bottom) if image.origin == "upper" else (bottom, top)
        rows, cols = values.shape
        cmap = image.get_cmap()
        traces.append(
            {
                "type": "heatmap",
                "z": _typed(values),
                "x": (left + (np.arange(cols) + 0.5) * (right - left) / cols).tolist(),
                "y": (first + (np.arange(rows) + 0.5) * (last - first) / rows).tolist(),
                "zmin": float(image.norm.vmin),
                "zmax": float(image.norm.vmax),
                "colorscale": [[t, _colour(cmap(t))] for t in np.linspace(0, 1, 11).tolist()],
                "showscale": image.colorbar is not None,
            }
        )
    return traces


def _axis(ax: Axes, which: str, anchor: str, domain: list[float]) -> dict:
    axis = getattr(ax, f"{which}axis")
    log = axis.get_scale() == "log"
    low, high = ax.get_xlim() if which == "x" else ax.get_ylim()
    out = {
        "domain": domain,
        "anchor": anchor,
        "title": {"text": axis.get_label_text()},
        "type": "log" if log else "linear",
        "range": np.log10([low, high]).tolist() if log else [low, high],
        "showline": True,
        "mirror": True,
        "linecolor": "#444",
        "gridcolor": "#e8e8e8",
        "zeroline": False,
    }
    ticks = [(loc, t.get_text()) for loc, t in zip(axis.get_ticklocs(), axis.get_ticklabels())]
    texts = [text.replace("\N{MINUS SIGN}", "-") for _, text in ticks]
    if (
        ticks
        and all(texts)
        and not all(re.fullmatch(r"[-+0-9.eE$^{}\\times ]+", t) for t in texts)
    ):
        out["tickvals"] = [float(loc) for loc, _ in ticks]
        out["ticktext"] = [text for _, text in ticks]
        out["tickangle"] = -axis.get_ticklabels()[0].get_rotation()
    return out


def _untranslated(fig: Figure) -> list[str]:
    """What in ``fig`` ``plotly_figure`` does not redraw: any artist other than the lines,
    scatters, line and polygon collections, patches, images, texts and titles of a panel
    (and a panel's furniture: axis, spines, legend, background), figure-level artists but
    the suptitle, and panels drawn over one another (twin axes)."""
    texts = [t for t in fig.texts if t.get_text() not in ("", fig.get_suptitle())]
    missing = [type(a).__name__ for a in (*texts, *fig.lines, *fig.patches, *fig.images)]
    panels = _panels(fig)
    boxes = [tuple(ax.get_position().bounds) for ax in panels]
    missing += ["overlaid axes"] * (len(boxes) - len(set(boxes)))
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        drawn = [*ax.lines, *ax.collections, *ax.patches, *ax.images, *ax.texts]
        missing += [f"{i.get_array().ndim}-D image" for i in ax.images if i.get_array().ndim != 2]
        if ax not in panels:
            missing += [type(a).__name__ for a in drawn]
            continue
        furniture = [ax.patch, ax.title, ax.xaxis, ax.yaxis, ax.get_legend()]
        known = {id(a) for a in (*drawn, *furniture, *ax.spines.values())}
        missing += [
            type(a).__name__
            for a in ax.get_children()
            if id(a) not in known and not (isinstance(a, Text) and not a.get_text())
        ]
        missing += [
            type(c).__name__
            for c in ax.collections
            if not isinstance(c, (PathCollection, LineCollection, PolyCollection))
        ]
    return missing


def _panels(fig: Figure) -> list[Axes]:
    """The axes ``plotly_figure`` draws: those with their axis on, colour bars aside."""
    return [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]


def plotly_figure(fig: Figure) -> dict | None:
    """The matplotlib figure ``fig`` as a plotly figure dict: each axes at its place, with
    its lines, scatters (trial ids from the points' URLs as ``customdata``), error bars,
    bands, bars, box and violin plots, images, texts, titles, the suptitle, labels, scales
    and categorical ticks; or None when ``fig`` draws anything else (``_untranslated``), so
    that a figure is shown interactive only when every artist of it is redrawn."""
    if _untranslated(fig):
        return None
    data: list[dict] = []
    height = fig.get_size_inches()[1] * 100
    layout: dict = {
        "height": max(round(height) + 60, MIN_HEIGHT),
        "margin": {"l": 60, "r": 20, "t": 40, "b": 60},
        "hovermode": "closest",
        "plot_bgcolor": "white",
        "barmode": "overlay",
        "annotations": [],
        "legend": {"itemclick": "toggleothers"},
        "showlegend": any(ax.get_legend() for ax in fig.axes) or bool(fig.legends),
    }
    named: set[str] = set()
    if fig.get_suptitle():
        layout["title"] = {"text": fig.get_suptitle().replace("\n", "<br>"), "x": 0.5}
        layout["margin"]["t"] = 70
    for number, ax in enumerate(_panels(fig), start=1):
        suffix = "" if number == 1 else str(number)
        box = ax.get_position()
        layout[f"xaxis{suffix}"] = _axis(ax, "x", f"y{suffix}", [box.x0, box.x1])
        layout[f"yaxis{suffix}"] = _axis(ax, "y", f"x{suffix}", [box.y0, box.y1])
        for trace in (
            _image_traces(ax) + _patch_traces(ax) + _collection_traces(ax) + _line_traces(ax)
        ):
            name = trace.pop("name", None)
            trace |= {"xaxis": f"x{suffix}", "yaxis": f"y{suffix}", "showlegend": False}
            if name:
                trace |= {"name": name, "legendgroup": name, "showlegend": name not in named}
                named.add(name)
            _add(data, trace)
        for text, x, y, anchor in _texts(ax):
            layout["annotations"].append(
                {
                    "text": text.replace("\n", "<br>"),
                    "x": x,
                    "y": y,
                    "xref": f"x{suffix} domain",
                    "yref": f"y{suffix} domain",
                    "xanchor": anchor,
                    "yanchor": "bottom" if y >= 1 else "middle",
                    "showarrow": False,
                }
            )
    return {"data": data, "layout": layout}


def _add(data: list[dict], trace: dict) -> None:
    """Append ``trace``, or join it to an earlier trace of its panel and style drawn above
    any fill, bar or image (a figure of hundreds of short lines stays small and fast)."""
    for earlier in reversed(data):
        if _joinable(earlier, trace):
            earlier["x"] += [None, *trace["x"]]
            earlier["y"] += [None, *trace["y"]]
            return
        if earlier["type"] != "scatter" or "fill" in earlier or earlier["xaxis"] != trace["xaxis"]:
            break
    data.append(trace)


def _joinable(first: dict, then: dict) -> bool:
    """Whether two traces are unnamed lines or markers of one style."""
    for trace in (first, then):
        if trace["type"] != "scatter" or "customdata" in trace or "legendgroup" in trace:
            return False
        if any(isinstance(v, list) for v in trace.get("marker", {}).values()):
            return False  # one colour or size per point
    style = [{k: v for k, v in t.items() if k not in ("x", "y")} for t in (first, then)]
    return style[0] == style[1]


def _texts(ax: Axes) -> list[tuple[str, float, float, str]]:
    """The axes' title and texts, at their place in axes fractions."""
    out = [(ax.get_title(), 0.5, 1.0, "center")] if ax.get_title() else []
    to_axes = ax.transAxes.inverted()
    for text in ax.texts:
        x, y = to_axes.transform(text.get_transform().transform(text.get_position()))
        out.append((text.get_text(), float(x), float(y), text.get_horizontalalignment()))
    return out
