"""HTML of the live report server: a page per scope (every report: freshness, chart, table, CSV link), the
filter form, the polling script that swaps in new figures when silver changes, and the 401/403 pages.

Self-contained (inline CSS, SVG charts drawn on the server, a few lines of script): no CDN, works offline.
"""
from __future__ import annotations

import html
from datetime import date, datetime, timedelta
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .. import charts
from ..engine import PORTFOLIO_SCOPE, ReportRun
from ..gold import GoldResult
from ..render import display_rows, format_lag, format_ts_ms, html_table, scope_label
from .auth import Grant
from .cache import ScopeResults
from .filters import DATE_FROM, DATE_TO, FilterSpec, FilterValues, apply_filters, choice_values, declared_filters
from .urls import scope_path

POLL_MS = 1000

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;max-width:1200px;color:#222}
h1{font-size:1.4rem;margin:.4rem 0} h2{font-size:1.1rem;margin:2rem 0 .2rem} .meta{color:#555;font-size:.85rem}
table{border-collapse:collapse;font-size:.8rem;margin-top:.6rem} th,td{padding:.25rem .6rem;border-bottom:1px solid #e4e4e4}
th{text-align:left;background:#f6f6f6;position:sticky;top:0} td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart img{max-width:100%;height:auto} nav{font-size:.85rem} nav a{margin-right:.8rem} .note{color:#666;font-size:.8rem}
form.filters{background:#f6f8fa;padding:.6rem .8rem;border-radius:6px;font-size:.85rem;margin:.8rem 0}
form.filters label{margin-right:1rem} .presets{margin-left:.4rem} .presets a.on{font-weight:bold} #status{color:#2a7d2a} .tiles{display:flex;gap:1rem;flex-wrap:wrap;margin:.6rem 0}
.tile{background:#f6f8fa;border-radius:6px;padding:.5rem .8rem;min-width:9rem} .tile b{display:block;font-size:1.2rem}
section{border-top:1px solid #ddd;margin-top:1.2rem} .denied{max-width:40rem;margin:4rem auto}
"""

SCRIPT = """
(function () {
  const body = document.body, versionsUrl = body.dataset.versionsUrl;
  const setStatus = (t) => { document.getElementById('status').textContent = t; };
  function tickLag() {
    const el = document.getElementById('newest'); const ms = el ? Number(el.dataset.ms) : 0;
    if (!ms) return;
    const s = Math.max(0, (Date.now() - ms) / 1000);
    document.getElementById('lag').textContent =
      s < 120 ? s.toFixed(0) + ' s' : s < 7200 ? (s / 60).toFixed(0) + ' min' : (s / 3600).toFixed(1) + ' h';
  }
  let busy = false;
  async function poll() {
    if (busy) return; busy = true;
    try {
      const r = await fetch(versionsUrl, {cache: 'no-store', credentials: 'same-origin'});
      if (!r.ok) { setStatus('not refreshing: HTTP ' + r.status); return; }
      const v = await r.json();
      if (v.key === body.dataset.key) { setStatus('live'); return; }
      const q = new URLSearchParams(location.search); q.set('fragment', '1');
      const f = await fetch(location.pathname + '?' + q, {cache: 'no-store', credentials: 'same-origin'});
      if (!f.ok) { setStatus('not refreshing: HTTP ' + f.status); return; }
      const j = await f.json();
      document.getElementById('content').innerHTML = j.content;
      document.getElementById('meta').innerHTML = j.meta;
      body.dataset.key = j.key;
      setStatus('live, updated ' + new Date().toLocaleTimeString());
      tickLag();
    } catch (e) { setStatus('not refreshing: ' + e); } finally { busy = false; }
  }
  setInterval(poll, %(poll)d); setInterval(tickLag, 1000); tickLag();
})();
"""


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


def document(title: str, body: str, attrs: str = "", script: str = "") -> str:
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>"
            f"<meta name=\"viewport\" content=\"width=device-width\"><style>{CSS}</style></head>"
            f"<body{attrs}>\n{body}\n{f'<script>{script}</script>' if script else ''}</body></html>\n")


def _gold_view(run: ReportRun, table: pa.Table) -> GoldResult:
    # The static renderer's helpers take a gold result; a live run carries the same fields.
    return GoldResult(run.spec, run.scope.name, table, "", None, run.newest_source_ts_ms, run.built_at_ms,
                      run.clients, run.seconds)


def chart_svg(run: ReportRun, values: FilterValues) -> bytes | None:
    """The report's chart over the filtered rows (matplotlib, ~0.1 s a chart: served apart from the page, so the
    figures of a refresh arrive without waiting for five charts)."""
    return charts.draw(apply_filters(run.spec, run.table, values), run.spec.chart, "svg", scope_label(run.scope.name))


def _chart_img(run: ReportRun, values: FilterValues, snapshot: str) -> str:
    if not run.spec.chart:
        return ""
    qs = values.query_string()
    # The snapshot key in the address: a new silver version is a new image, an unchanged one comes from cache.
    src = f"{scope_path(run.scope.name)}/{run.spec.name}.svg?v={snapshot}" + (f"&{qs}" if qs else "")
    return f'<img alt="{esc(run.spec.chart.get("title") or run.spec.title)}" src="{esc(src)}">'


def report_section(run: ReportRun, values: FilterValues, snapshot: str) -> str:
    spec = run.spec
    table = apply_filters(spec, run.table, values)
    shown, total = display_rows(_gold_view(run, table))
    applied = [f.column for f in declared_filters(spec)
               if (f.kind == "date_range" and (values.date_from or values.date_to)) or values.picked(f.column)]
    qs = values.query_string()
    csv = f"{scope_path(run.scope.name)}/{spec.name}.csv" + (f"?{qs}" if qs else "")
    note = f"Showing {shown.num_rows:,} of {total:,} rows" + (f" (of {run.table.num_rows:,} before filters)"
                                                              if table.num_rows != run.table.num_rows else "")
    filtered = f"filtered by {', '.join(applied)}" if applied else "not filtered"
    return (f'<section id="{esc(spec.name)}" data-rows="{table.num_rows}"><h2>{esc(spec.title)}</h2>'
            f'<p class="meta">{esc(spec.description)}</p>'
            f'<p class="meta">Newest source change included: {esc(format_ts_ms(run.newest_source_ts_ms))}; '
            f'{esc(filtered)}; computed in {run.seconds:.2f} s · <a href="{esc(csv)}">CSV</a></p>'
            f'<div class="chart">{_chart_img(run, values, snapshot)}</div><p class="note">{esc(note)}.</p>{html_table(shown)}</section>')


def content(results: ScopeResults, values: FilterValues) -> str:
    parts = [report_section(results.runs[name], values, results.key) for name in results.runs]
    parts += [f'<section id="{esc(name)}"><h2>{esc(name)}</h2><p class="note">{esc(why)}</p></section>'
              for name, why in results.missing.items()]
    return "".join(parts)


def meta(results: ScopeResults) -> str:
    newest = results.newest_source_ts_ms
    return (f'<div class="tiles"><div class="tile">Newest source change included<b id="newest" data-ms="{newest or 0}">'
            f'{esc(format_ts_ms(newest))}</b></div>'
            f'<div class="tile">Lag (now − newest change)<b id="lag">{esc(format_lag(None))}</b></div>'
            f'<div class="tile">Computed<b>{esc(format_ts_ms(results.computed_at_ms))}</b></div>'
            f'<div class="tile">Clients<b>{len(results.scope.clients):,}</b></div></div>'
            f'<p class="meta">Silver snapshot <code>{esc(results.key)}</code> '
            f'({len(results.versions)} tables); report queries took {results.seconds:.2f} s.</p>')


PRESET_DAYS = (7, 30, 90)


def newest_day(declared: Sequence[tuple[ReportRun, FilterSpec]]) -> date | None:
    """The latest day in any date-range column of the unfiltered results: where the range presets end (the data's
    newest day rather than today, so that a preset over history that stopped a while ago still shows rows)."""
    days = []
    for run, f in declared:
        if f.kind == "date_range" and run.table.num_rows and f.column in run.table.column_names:
            v = pc.max(run.table.column(f.column)).as_py()
            if v is not None:
                days.append(v.date() if isinstance(v, datetime) else v)
    return max(days) if days else None


def date_presets(values: FilterValues, newest: date) -> str:
    """Links for the last 7, 30 and 90 days of data, keeping the other filters (a dashboard's range presets)."""
    links = []
    for n in PRESET_DAYS:
        lo = newest - timedelta(days=n - 1)
        qs = FilterValues(lo, newest, values.choices).query_string()
        on = ' class="on"' if (values.date_from, values.date_to) == (lo, newest) else ""
        links.append(f'<a{on} data-days="{n}" href="?{esc(qs)}">{n}</a>')
    return f'<span class="presets">last {" · ".join(links)} days of data (to {esc(newest.isoformat())})</span>'


def filter_form(results: ScopeResults, values: FilterValues) -> str:
    runs: Sequence[ReportRun] = list(results.runs.values())
    declared = [(run, f) for run in runs for f in declared_filters(run.spec)]
    if not declared:
        return ""
    parts = []
    if any(f.kind == "date_range" for _, f in declared):
        newest = newest_day(declared)
        parts.append(f'<label>From <input type="date" name="{DATE_FROM}" value="{esc(values.date_from or "")}"></label>'
                     f'<label>To <input type="date" name="{DATE_TO}" value="{esc(values.date_to or "")}"></label>'
                     + (date_presets(values, newest) if newest else ""))
    for column in sorted({f.column for _, f in declared if f.kind == "choice"}):
        options = sorted({v for run, f in declared if f.column == column
                          for v in choice_values(run.spec, run.table, column)})
        picked = set(values.picked(column))
        opts = "".join(f'<option value="{esc(o)}"{" selected" if o in picked else ""}>{esc(o)}</option>'
                       for o in options)
        parts.append(f'<label>{esc(column)} <select name="{esc(column)}" multiple size="3">{opts}</select></label>')
    return (f'<form class="filters" method="get">{"".join(parts)}<button type="submit">Apply</button> '
            f'<a href="?">Reset</a></form>')


def scope_page(results: ScopeResults, values: FilterValues, grant: Grant, rendered_content: str) -> str:
    name = results.scope.name
    title = f"{scope_label(name)} — live reports"
    nav = (f'<nav><a href="/">All scopes</a> signed in as {esc(grant.describe())} · <a href="/logout">sign out</a> · '
           f'<span id="status">live</span></nav>')
    body = (f"{nav}<h1>{esc(title)}</h1><div id=\"meta\">{meta(results)}</div>{filter_form(results, values)}"
            f'<div id="content">{rendered_content}</div>')
    attrs = (f' data-key="{esc(results.key)}" data-scope="{esc(name)}" '
             f'data-versions-url="/api/versions{esc(scope_path(name))}"')
    return document(title, body, attrs, SCRIPT % {"poll": POLL_MS})


def index_page(grant: Grant, clients: Sequence[str]) -> str:
    links = []
    if grant.can_view(PORTFOLIO_SCOPE):
        links.append(f'<li><a href="/portfolio">{esc(scope_label(PORTFOLIO_SCOPE))}</a></li>')
    links += [f'<li><a href="{esc(scope_path(c))}">{esc(scope_label(c))}</a></li>' for c in clients
              if grant.can_view(c)]
    body = (f'<nav>signed in as {esc(grant.describe())} · <a href="/logout">sign out</a></nav><h1>Live reports</h1>'
            f"<ul>{''.join(links) or '<li>no client yet</li>'}</ul>")
    return document("Live reports", body)


def denied_page(status: int, message: str, next_path: str = "/") -> str:
    """401 (with a sign-in form) or 403: what went wrong, and no data."""
    head = "Sign in required" if status == 401 else "Access denied"
    form = (f'<form method="post" action="/login"><input type="hidden" name="next" value="{esc(next_path)}">'
            f'<label>Access token <input type="password" name="token" size="48" autocomplete="off"></label> '
            f'<button type="submit">Sign in</button></form>'
            '<p class="note">Tokens are made by the operator: <code>dw reports tokens add --client NAME</code>.</p>'
            if status == 401 else '<p><a href="/">Your reports</a> · <a href="/logout">sign in as someone else</a></p>')
    return document(f"{status} {head}", f'<div class="denied"><h1>{status} — {esc(head)}</h1><p>{esc(message)}</p>'
                                        f"{form}</div>")
