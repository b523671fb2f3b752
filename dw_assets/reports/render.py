"""Static HTML reports and Dagster markdown previews from gold results.

Writes `<reports_dir>/<scope>/<report>.html` (chart as inline SVG, then the table), a `manifest.json` per scope
that the index is built from, and `<reports_dir>/index.html` linking every scope's reports with their
freshness. Pages are self-contained (no scripts, no external assets) so they can be mailed or served as files.
"""
from __future__ import annotations

import base64
import html
import json
import os
import tempfile
import time
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa

from . import charts
from .engine import PORTFOLIO_SCOPE
from .gold import GoldResult

DEFAULT_HTML_ROWS = 200
MARKDOWN_ROWS = 15
MANIFEST = "manifest.json"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222}
h1{font-size:1.4rem;margin-bottom:.2rem} h2{font-size:1.1rem;margin-top:2rem} .meta{color:#666;font-size:.85rem}
table{border-collapse:collapse;font-size:.8rem;margin-top:.8rem} th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4}
th{text-align:left;background:#f6f6f6;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart svg{max-width:100%;height:auto} nav a{margin-right:.8rem} .note{color:#666;font-size:.8rem}
"""


def scope_label(scope: str) -> str:
    return "Portfolio (all clients)" if scope == PORTFOLIO_SCOPE else f"Client {scope}"


def format_value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, Decimal):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, datetime):
        return v.isoformat(sep=" ", timespec="seconds")
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


def format_ts_ms(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "unknown"
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_lag(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def display_rows(result: GoldResult, limit: int | None = None) -> tuple[pa.Table, int]:
    """The rows pages show, in the report's preferred order, and the total row count."""
    table = result.table
    sort = [(str(c), str(o)) for c, o in result.spec.preview.get("sort", []) if c in table.column_names]
    if sort:
        table = table.sort_by(sort)
    cap = limit if limit is not None else int(result.spec.preview.get("rows", DEFAULT_HTML_ROWS))
    return table.slice(0, cap), result.table.num_rows


def freshness_line(result: GoldResult) -> str:
    return (f"Newest source change included: {format_ts_ms(result.newest_source_ts_ms)}; lag at build "
            f"{format_lag(result.lag_seconds)}; built {format_ts_ms(result.built_at_ms)}")


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def html_table(table: pa.Table) -> str:
    numeric = [_is_numeric(f.type) for f in table.schema]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in table.column_names)
    body = []
    for row in table.to_pylist():
        cells = "".join(f'<td class="num">{html.escape(format_value(v))}</td>' if num
                        else f"<td>{html.escape(format_value(v))}</td>"
                        for v, num in zip(row.values(), numeric))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def markdown_table(result: GoldResult, rows: int = MARKDOWN_ROWS) -> str:
    """A markdown preview of the result for Dagster's metadata panel."""
    shown, total = display_rows(result, rows)
    esc = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731 - markdown cell escaping only
    lines = ["| " + " | ".join(esc(n) for n in shown.column_names) + " |",
             "|" + "|".join("---:" if _is_numeric(f.type) else "---" for f in shown.schema) + "|"]
    lines += ["| " + " | ".join(esc(format_value(v)) for v in r.values()) + " |" for r in shown.to_pylist()]
    more = f"\n\n_{shown.num_rows} of {total} rows; full table: `{result.url}`_" if total > shown.num_rows else ""
    return f"**{result.spec.title}** — {scope_label(result.scope)}\n\n" + "\n".join(lines) + more


def chart_markdown(result: GoldResult) -> str:
    """The report's chart as an inline PNG in markdown (Dagster renders data-URI images), or ''."""
    png = charts.draw(result.table, result.spec.chart, "png", scope_label(result.scope))
    if png is None:
        return ""
    return f"![{result.spec.title}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")


def report_html(result: GoldResult, siblings: Sequence[GoldResult] = ()) -> str:
    svg = charts.draw(result.table, result.spec.chart, "svg", scope_label(result.scope))
    shown, total = display_rows(result)
    nav = " ".join(f'<a href="{html.escape(s.name)}.html">{html.escape(s.spec.title)}</a>' for s in siblings)
    note = (f'<p class="note">Showing {shown.num_rows} of {total} rows; the full table is the gold Delta table '
            f"<code>{html.escape(result.url)}</code>.</p>") if total > shown.num_rows else ""
    svg_text = svg.decode("utf-8") if svg else ""
    # matplotlib's SVG starts with an XML declaration and DOCTYPE, which are not allowed inside HTML.
    svg_text = svg_text[svg_text.find("<svg"):] if svg_text else '<p class="note">No rows to chart.</p>'
    body = (f'<nav><a href="../index.html">All reports</a> {nav}</nav>'
            f"<h1>{html.escape(result.spec.title)} — {html.escape(scope_label(result.scope))}</h1>"
            f'<p class="meta">{html.escape(freshness_line(result))}. Clients: '
            f"{html.escape(', '.join(result.clients) or '—')}.</p>"
            f"<p>{html.escape(result.spec.description)}</p>"
            f'<div class="chart">{svg_text}</div>{note}{html_table(shown)}')
    return _page(f"{result.spec.title} — {scope_label(result.scope)}", body)


def _write_atomic(path: Path, text: str) -> None:
    # Several Dagster runs (one per client) rewrite the index: never let a reader see half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; reports are meant to be served and shared
    os.replace(tmp, path)


def write_scope_reports(reports_dir: str | Path, results: Sequence[GoldResult]) -> list[Path]:
    """Write one HTML page per result (all of one scope), the scope's manifest, and refresh the index."""
    if not results:
        return []
    scope = results[0].scope
    if any(r.scope != scope for r in results):
        raise ValueError("write_scope_reports takes results of a single scope")
    out_dir = Path(reports_dir) / scope
    paths = []
    for r in results:
        path = out_dir / f"{r.name}.html"
        _write_atomic(path, report_html(r, results))
        paths.append(path)
    manifest = {"scope": scope, "label": scope_label(scope), "written_at_ms": int(time.time() * 1000),
                "reports": [{"name": r.name, "title": r.spec.title, "file": f"{r.name}.html", "rows": r.table.num_rows,
                             "newest_source_ts_ms": r.newest_source_ts_ms, "built_at_ms": r.built_at_ms,
                             "lag_seconds": r.lag_seconds, "gold_url": r.url} for r in results]}
    _write_atomic(out_dir / MANIFEST, json.dumps(manifest, indent=2))
    write_index(reports_dir)
    return paths


def _manifests(reports_dir: Path) -> Iterable[dict[str, Any]]:
    for p in sorted(reports_dir.glob(f"*/{MANIFEST}")):
        try:
            yield json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a manifest being replaced right now: the next index write picks it up


def write_index(reports_dir: str | Path) -> Path:
    """`<reports_dir>/index.html`: the portfolio first, then every client, with links and freshness."""
    root = Path(reports_dir)
    manifests = sorted(_manifests(root), key=lambda m: (m["scope"] != PORTFOLIO_SCOPE, m["scope"]))
    rows = []
    for m in manifests:
        newest = max((r["newest_source_ts_ms"] for r in m["reports"] if r["newest_source_ts_ms"]), default=None)
        built = max((r["built_at_ms"] for r in m["reports"]), default=None)
        links = " ".join(f'<a href="{html.escape(m["scope"])}/{html.escape(r["file"])}">{html.escape(r["title"])}</a>'
                         for r in m["reports"])
        lag = (built - newest) / 1000 if newest and built else None
        rows.append(f"<tr><td>{html.escape(m['label'])}</td><td>{html.escape(format_ts_ms(newest))}</td>"
                    f"<td class=\"num\">{html.escape(format_lag(lag))}</td><td>{html.escape(format_ts_ms(built))}</td>"
                    f"<td>{links}</td></tr>")
    body = ("<h1>Reports</h1>"
            f'<p class="meta">Index written {html.escape(format_ts_ms(int(time.time() * 1000)))}.</p>'
            "<table><thead><tr><th>scope</th><th>newest source change</th><th>lag at build</th><th>built</th>"
            f"<th>reports</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    path = root / "index.html"
    _write_atomic(path, _page("Reports", body))
    return path
