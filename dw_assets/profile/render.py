"""The profile as people read it: per job type a markdown table and a cost/latency chart with the Pareto
frontier (SVG for the HTML page, PNG for Dagster's metadata), and the HTML page itself."""
from __future__ import annotations

import html
import io
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")  # headless, also inside Dagster's run workers
from matplotlib.figure import Figure  # noqa: E402

_COLORS = {"local": "#1f77b4", "spark": "#d62728"}
_MARKERS = {1: "o", 2: "s"}


def _mb(v: float | None) -> str:
    return "" if v is None else f"{v / 1e6:,.1f}"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "" if v is None else fmt.format(v)


COLUMNS = ["scale", "engine", "cores", "mode", "runs", "latency s (median)", "CPU s", "CPU use", "peak RSS MB",
           "read MB", "written MB", "cost / run", "frontier"]


def table_rows(job: dict[str, Any], currency: str) -> list[list[str]]:
    rows = []
    recommended = {r["cell"] for r in job["recommendations"]}
    for c in job["cells"]:
        kind = c.get("kind", "measured")
        if kind == "not measured":
            rows.append([f"x{c['scale']}", c["engine"], str(c["cores"]), "not measured", "0", "", "", "", "", "", "",
                         "", c.get("reason", "")])
            continue
        if kind == "measured" and not c["runs"]:
            why = (c.get("failed_runs") or ["no run"])[0] or "no run"
            rows.append([f"x{c['scale']}", c["engine"], str(c["cores"]), c["mode"], "0", "", "", "", "", "", "", "",
                         f"all {len(c.get('failed_runs', []))} runs failed: {why[:120]}"])
            continue
        rss = _num(c.get("peak_rss_mb"), "{:,.0f}")
        if c.get("sail_peak_rss_mb"):
            rss += f" (+ Sail {c['sail_peak_rss_mb']:,.0f})"
        mark = "recommended" if c["id"] in recommended else ("yes" if c.get("on_frontier") else "")
        rows.append([f"x{c['scale']}", c["engine"], str(c["cores"]),
                     "extrapolated" if kind == "extrapolated" else c["mode"], str(c["runs"]),
                     _num(c.get("wall_s"), "{:.3f}"), _num(c.get("cpu_s")), _num(c.get("cpu_utilization"), "{:.0%}"),
                     rss, _mb(c.get("bytes_read")), _mb(c.get("bytes_written")),
                     _num(c.get("cost"), "{:.3g} " + currency) + (" (shared)" if c.get("mode") == "concurrent" else ""),
                     mark if kind == "measured" else "model: core scaling 1->2 cores"])
    return rows


def markdown_table(job: dict[str, Any], currency: str) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in table_rows(job, currency)]
    return "\n".join(lines)


def chart(job: dict[str, Any], currency: str, fmt: Literal["svg", "png"] = "svg") -> bytes | None:
    """Cost per run against latency, one panel per scale (log axes): measured alone (filled), concurrent
    (hollow), extrapolated (grey x, labelled), the frontier of the measured alone runs and the recommendation."""
    pts = [c for c in job["cells"] if c.get("wall_s") is not None and c.get("cost")]
    if not pts:
        return None
    scales = sorted({c["scale"] for c in pts})
    fig = Figure(figsize=(5.2 * len(scales), 3.9), dpi=100)
    recommended = {r["cell"] for r in job["recommendations"]}
    for i, scale in enumerate(scales):
        ax = fig.add_subplot(1, len(scales), i + 1)
        here = [c for c in pts if c["scale"] == scale]
        for c in here:
            if c["kind"] == "extrapolated":
                ax.scatter(c["wall_s"], c["cost"], marker="x", color="#888888")
                ax.annotate(c["engine"].split(":", 1)[1] + " (extrapolated)", (c["wall_s"], c["cost"]), fontsize=7,
                            color="#666666", xytext=(4, -8), textcoords="offset points")
                continue
            color = _COLORS.get(c["engine"], "#333333")
            alone = c["mode"] == "alone"
            ax.scatter(c["wall_s"], c["cost"], marker=_MARKERS.get(c["cores"], "^"), s=46,
                       facecolors=color if alone else "none", edgecolors=color,
                       label=f"{c['engine']} {c['cores']}c{'' if alone else ' concurrent'}")
            if c["id"] in recommended:
                ax.scatter(c["wall_s"], c["cost"], marker="*", s=260, facecolors="none", edgecolors="#2ca02c",
                           linewidths=1.5, label="recommended")
        front = sorted((c for c in here if c.get("on_frontier")), key=lambda c: c["wall_s"])
        if front:
            ax.step([c["wall_s"] for c in front], [c["cost"] for c in front], where="post", color="#2ca02c",
                    linewidth=1, linestyle="--", label="Pareto frontier (measured, alone)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("latency, s (median)")
        ax.set_ylabel(f"cost per run, {currency}")
        ax.set_title(f"{job['title']} x{scale}", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        seen = dict(zip(labels, handles))
        ax.legend(seen.values(), seen.keys(), fontsize=6, loc="best")
        ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        ".rec{background:#e6f4ea;padding:.5em;border-left:4px solid #2ca02c}.note{color:#555;font-size:13px}")


def html_page(profile: dict[str, Any]) -> str:
    prices, currency = profile["prices"], profile["prices"]["currency"]
    parts = [f"<h1>Compute profile</h1><p class='note'>{html.escape(profile.get('machine', ''))}. Prices from "
             f"{html.escape(prices['path'])}: VM {prices['vm']['price_per_core_hour']} {currency} per core-hour "
             f"({html.escape(prices['vm']['source'])}). The shipped prices are examples to replace. Cost of a run "
             "alone: its cores for its wall time; concurrent: the machine's cost over the round split by CPU "
             f"seconds. Every figure is the median of at least {profile['min_runs']} runs, each in its own "
             "process. Databricks rows are extrapolations: "
             f"{html.escape(profile['extrapolation_model'])}</p>"]
    for name, job in profile["jobs"].items():
        parts.append(f"<h2>{html.escape(job['title'])}</h2><p>{html.escape(job['what'])}</p>")
        for rec in job["recommendations"]:
            parts.append(f"<p class='rec'>{html.escape(rec['text'])}</p>")
        for engine, why in job["not_measured"].items():
            parts.append(f"<p class='note'>{html.escape(engine)}: not measured ({html.escape(why)})</p>")
        svg = chart(job, currency, "svg")
        if svg:
            text = svg.decode()
            parts.append(text[text.index("<svg"):])  # no XML declaration inside HTML
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in table_rows(job, currency))
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>Compute profile</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")


def summary_markdown(profile: dict[str, Any]) -> str:
    """Recommendations, then one table per job type: what the README and the Dagster asset show."""
    currency = profile["prices"]["currency"]
    out = ["Recommendations:", ""] + [f"- {r['text']}" for j in profile["jobs"].values() for r in j["recommendations"]]
    for job in profile["jobs"].values():
        out += ["", f"**{job['title']}**: {job['what']}", ""]
        out += [f"- {e}: not measured ({why})" for e, why in job["not_measured"].items()]
        if job["cells"]:
            out += ["", markdown_table(job, currency)]
    return "\n".join(out)
