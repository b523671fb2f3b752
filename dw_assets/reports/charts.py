"""Static charts for the reports, drawn with matplotlib from a report's result and its front-matter chart spec.

Four kinds cover the catalogue: `line` (x, y, optional series), `heatmap` (x, y, value), `barh` (label
columns, value, optional facet, limit) and `stacked_bar` (x, stack columns). Output is SVG for the HTML pages
and PNG for Dagster's markdown metadata; a chart that cannot be drawn (no rows) returns None.
"""
from __future__ import annotations

import io
import warnings
from decimal import Decimal
from typing import Any, Callable, Literal, Mapping

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, also inside Dagster's run workers
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

ChartFormat = Literal["svg", "png"]
matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                     "axes.spines.right": False})


class ChartSpecError(ValueError):
    """A chart spec naming a missing column or an unknown kind."""


def _numeric(s: pd.Series) -> pd.Series:
    # Decimal columns arrive as objects; charts only need floats.
    if s.dtype == object:
        return pd.to_numeric(s.map(lambda v: float(v) if isinstance(v, Decimal) else v), errors="coerce")
    return pd.to_numeric(s, errors="coerce")


def _frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ChartSpecError(f"chart names column(s) {missing} the report does not have")
    return table.select(list(dict.fromkeys(columns))).to_pandas()


def _line(ax: Any, table: pa.Table, spec: Mapping[str, Any]) -> None:
    x, y, series = spec["x"], spec["y"], spec.get("series")
    df = _frame(table, [x, y] + ([series] if series else []))
    df[y] = _numeric(df[y])
    if series:
        top = df.groupby(series)[y].sum().sort_values(ascending=False).head(int(spec.get("max_series", 5)))
        for name in top.index:
            part = df[df[series] == name].groupby(x)[y].sum().sort_index()
            ax.plot(part.index, part.values, label=str(name), linewidth=1.2)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # outside: never hides data
    else:
        part = df.groupby(x)[y].sum().sort_index()
        ax.plot(part.index, part.values, linewidth=1.2)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.figure.autofmt_xdate()


def _heatmap(ax: Any, table: pa.Table, spec: Mapping[str, Any]) -> None:
    x, y, value = spec["x"], spec["y"], spec["value"]
    df = _frame(table, [x, y, value])
    df[value] = _numeric(df[value])
    grid = df.pivot_table(index=y, columns=x, values=value, aggfunc="sum").sort_index()
    values = grid.to_numpy(dtype=float)
    vmax = None
    if values.shape[1] > 1 and grid.iloc[:, 0].nunique() == 1:
        # A constant baseline column (month 0 is 100 % by definition) would flatten the rest of the scale.
        vmax = float(np.nanmax(values[:, 1:])) if np.isfinite(values[:, 1:]).any() else None
    im = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest", vmax=vmax)
    ax.figure.colorbar(im, ax=ax, label=value)
    step = max(1, len(grid.index) // 12)
    ax.set_yticks(range(0, len(grid.index), step), [str(v) for v in grid.index[::step]])
    xstep = max(1, len(grid.columns) // 12)
    ax.set_xticks(range(0, len(grid.columns), xstep), [str(v) for v in grid.columns[::xstep]])
    ax.set_xlabel(x)
    ax.set_ylabel(y)


def _barh(ax: Any, table: pa.Table, spec: Mapping[str, Any]) -> None:
    labels = list(spec["label"]) if isinstance(spec["label"], (list, tuple)) else [spec["label"]]
    value, facet = spec["value"], spec.get("facet")
    df = _frame(table, labels + [value] + ([facet] if facet else []))
    df[value] = _numeric(df[value])
    if facet:  # one facet value per chart: the one with the largest total (amounts in different units)
        biggest = df.groupby(facet)[value].sum().idxmax()
        df = df[df[facet] == biggest]
        ax.set_title(f"{facet} = {biggest}", fontsize=8, loc="right")
    df = df.sort_values(value, ascending=False).head(int(spec.get("limit", 10)))
    # Label columns that are the same on every bar (the client, in a client's report) only add noise.
    varying = [c for c in labels if df[c].nunique() > 1] or labels[-1:]
    text = df[varying].astype(str).agg(" · ".join, axis=1)
    ax.barh(range(len(df)), df[value].values, color="#4C72B0")
    ax.set_yticks(range(len(df)), list(text))
    ax.invert_yaxis()
    ax.set_xlabel(value)


def _stacked_bar(ax: Any, table: pa.Table, spec: Mapping[str, Any]) -> None:
    x, stack = spec["x"], list(spec["stack"])
    df = _frame(table, [x] + stack)
    for c in stack:
        df[c] = _numeric(df[c])
    grouped = df.groupby(x)[stack].sum().sort_index()
    bottom = pd.Series(0.0, index=grouped.index)
    for c in stack:
        ax.bar([str(i) for i in grouped.index], grouped[c].values, bottom=bottom.values, label=c)
        bottom += grouped[c]
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_xlabel(x)


CHART_KINDS: dict[str, Callable[[Any, pa.Table, Mapping[str, Any]], None]] = {
    "line": _line, "heatmap": _heatmap, "barh": _barh, "stacked_bar": _stacked_bar,
}


def draw(table: pa.Table, spec: Mapping[str, Any], fmt: ChartFormat = "svg", subtitle: str = "") -> bytes | None:
    """The chart of a report result in `fmt`, or None when the spec is empty or the result has no rows."""
    if not spec or table.num_rows == 0:
        return None
    kind = spec.get("kind")
    if kind not in CHART_KINDS:
        raise ChartSpecError(f"unknown chart kind {kind!r}: one of {', '.join(CHART_KINDS)}")
    fig = Figure(figsize=(8.5, 3.8), dpi=96 if fmt == "png" else 72)  # no pyplot state: thread-safe
    ax = fig.add_subplot()
    try:
        CHART_KINDS[kind](ax, table, spec)
    except KeyError as e:
        raise ChartSpecError(f"chart spec of kind {kind!r} lacks {e}") from None
    title = str(spec.get("title") or "")
    fig.suptitle(f"{title} — {subtitle}" if subtitle and title else title or subtitle, fontsize=10)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Source data carries emoji the bundled font lacks: a missing glyph is cosmetic, not worth a warning.
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.savefig(buf, format=fmt)
    return buf.getvalue()
