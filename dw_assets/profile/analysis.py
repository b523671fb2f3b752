"""From raw runs to the profile: per cell (job, engine, cores, scale, mode) the medians and the cost, the Pareto
frontier per job and scale, a recommendation backed by measured cells, and Databricks extrapolations."""
from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from .jobs import JOBS
from .pareto import pareto_frontier
from .prices import Prices
from .runner import Run

MIN_RUNS = 3
EXTRAPOLATION_MODEL = ("Amdahl fit of the Spark-on-Sail runs measured alone at 1 and 2 cores: serial share "
                       "s = 2*t2/t1 - 1 (clamped to 0..1), t(n) = t1*(s + (1-s)/n). Leaves out cluster start-up, "
                       "minimum billing, network and object-store latency: a lower bound on a cluster's latency.")


def cell_id(job: str, engine: str, cores: int, scale: int, mode: str) -> str:
    return f"{job}/{engine}/{cores}c/x{scale}/{mode}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _costs(runs: list[Run], prices: Prices) -> dict[int, float]:
    """Cost per run: alone, the run's cores for its wall time; concurrent, the machine's cores for the round's
    wall time split between the round's jobs by their CPU seconds."""
    out: dict[int, float] = {}
    rounds: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        if r.ok:
            rounds[(r.engine, r.cores, r.scale, r.mode, r.index, r.mode == "alone" and r.job)].append(r)
    for group in rounds.values():
        if group[0].mode == "alone":
            for r in group:
                out[id(r)] = prices.vm.run_cost(r.cores, r.wall_s)
            continue
        total = prices.vm.run_cost(group[0].cores, max(r.round_wall_s or r.wall_s for r in group))
        cpu = sum(r.cpu_s or 0 for r in group) or 1.0
        for r in group:
            out[id(r)] = total * (r.cpu_s or 0) / cpu
    return out


def cells(runs: list[Run], prices: Prices) -> list[dict[str, Any]]:
    costs = _costs(runs, prices)
    groups: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        groups[cell_id(r.job, r.engine, r.cores, r.scale, r.mode)].append(r)
    out = []
    for cid, group in groups.items():
        ok = [r for r in group if r.ok]
        first = group[0]
        cell: dict[str, Any] = {
            "id": cid, "job": first.job, "engine": first.engine, "cores": first.cores, "scale": first.scale,
            "mode": first.mode, "sizes": first.sizes, "kind": "measured", "runs": len(ok),
            "failed_runs": [r.error for r in group if not r.ok],
            "wall_s_runs": [r.wall_s for r in ok],
        }
        if ok:
            cell.update({
                "wall_s": _median([r.wall_s for r in ok]),
                "cpu_s": _median([r.cpu_s for r in ok]),
                "sail_cpu_s": _median([r.sail_cpu_s for r in ok if r.sail_cpu_s is not None]),
                "cpu_utilization": _median([r.cpu_s / (r.wall_s * r.cores) for r in ok if r.wall_s]),
                "peak_rss_mb": _median([r.peak_rss_mb for r in ok if r.peak_rss_mb is not None]),
                "sail_peak_rss_mb": _median([r.sail_peak_rss_mb for r in ok if r.sail_peak_rss_mb is not None]),
                "bytes_read": _median([r.bytes_read for r in ok]),
                "bytes_written": _median([r.bytes_written for r in ok]),
                "cost": _median([costs[id(r)] for r in ok]),
            })
        out.append(cell)
    return sorted(out, key=lambda c: (c["job"], c["scale"], c["mode"], c["engine"], c["cores"]))


def extrapolations(measured: list[dict], prices: Prices) -> list[dict[str, Any]]:
    """Each Databricks cluster type per job and scale, from the Spark runs alone at 1 and 2 cores, or not
    measured (saying what is missing)."""
    out = []
    by_key = {(c["job"], c["scale"], c["cores"]): c for c in measured
              if c["engine"] == "spark" and c["mode"] == "alone" and c["runs"] >= MIN_RUNS}
    for job, scale in sorted({(c["job"], c["scale"]) for c in measured}):
        one, two = by_key.get((job, scale, 1)), by_key.get((job, scale, 2))
        for cluster in prices.clusters:
            cell = {"id": cell_id(job, f"databricks:{cluster.name}", cluster.cores, scale, "alone"), "job": job,
                    "engine": f"databricks:{cluster.name}", "cores": cluster.cores, "scale": scale, "mode": "alone",
                    "runs": 0, "description": cluster.description}
            if one is None or two is None:
                cell.update(kind="not measured", reason="needs Spark-on-Sail runs alone at 1 and 2 cores (median "
                                                        f"of {MIN_RUNS}) of this job and scale")
            else:
                t1, t2 = one["wall_s"], two["wall_s"]
                serial = min(1.0, max(0.0, 2 * t2 / t1 - 1))
                wall = t1 * (serial + (1 - serial) / cluster.cores)
                cell.update(kind="extrapolated", wall_s=wall, cost=cluster.run_cost(wall), serial_share=serial,
                            model=EXTRAPOLATION_MODEL, from_cells=[one["id"], two["id"]])
            out.append(cell)
    return out


def _label(c: dict) -> str:
    return f"{c['engine']} at {c['cores']} core{'s' if c['cores'] != 1 else ''}"


def _money(v: float, currency: str) -> str:
    return f"{v:.3g} {currency}"


def recommend(job: str, scale: int, measured: list[dict], slack: float, currency: str) -> dict[str, Any] | None:
    """The cheapest frontier configuration whose latency is within `slack` of the fastest measured one, with
    the reason: how it compares with the best configuration of each other engine (or core count)."""
    pool = [c for c in measured if c["job"] == job and c["scale"] == scale and c["mode"] == "alone"
            and c["runs"] >= MIN_RUNS]
    if not pool:
        return None
    front = set(pareto_frontier([(c["id"], c["wall_s"], c["cost"]) for c in pool]))
    fastest = min(c["wall_s"] for c in pool)
    best = min((c for c in pool if c["id"] in front and c["wall_s"] <= fastest * slack),
               key=lambda c: (c["cost"], c["wall_s"]))
    others = [c for c in pool if c["engine"] != best["engine"]] or [c for c in pool if c["id"] != best["id"]]
    title = f"{JOBS[job].title} (x{scale})"
    text = f"{title}: {_label(best)}, {best['wall_s']:.2f} s and {_money(best['cost'], currency)} a run"
    if others:
        # The alternative a reader would pick otherwise: the other engine's cheapest among its configurations
        # that are no slower than this one (within the slack), else its fastest.
        near = [c for c in others if c["wall_s"] <= best["wall_s"] * slack]
        alt = min(near, key=lambda c: c["cost"]) if near else min(others, key=lambda c: c["wall_s"])
        ratio = alt["cost"] / best["cost"] if best["cost"] else float("inf")
        speed = alt["wall_s"] / best["wall_s"]
        when = ("at about the same latency" if abs(speed - 1) <= slack - 1
                else f"and {speed:.1f}x faster" if speed > 1 else f"though {1 / speed:.1f}x slower")
        if ratio >= 1:
            text += f": {ratio:.1f}x cheaper than {_label(alt)} ({alt['wall_s']:.2f} s) {when}"
        else:  # the cheaper alternative is too slow: say what the extra cost buys
            text += (f": costs {1 / ratio:.1f}x as much as {_label(alt)}, which is {alt['wall_s'] / best['wall_s']:.1f}x "
                     f"slower ({alt['wall_s']:.2f} s), beyond the {slack:g}x latency slack")
    else:
        text += " (the only configuration measured)"
    return {"job": job, "scale": scale, "cell": best["id"], "text": text, "runs": best["runs"],
            "wall_s_runs": best["wall_s_runs"], "wall_s": best["wall_s"], "cost": best["cost"],
            "frontier": sorted(front), "latency_slack": slack}


def summarize(runs: list[Run], not_measured: dict[str, str], prices: Prices, slack: float) -> dict[str, Any]:
    measured = cells(runs, prices)
    extra = extrapolations(measured, prices)
    jobs_out = {}
    for job in dict.fromkeys(c["job"] for c in measured):
        scales = sorted({c["scale"] for c in measured if c["job"] == job})
        recs = [r for s in scales if (r := recommend(job, s, measured, slack, prices.currency))]
        frontier = {cid for r in recs for cid in r["frontier"]}
        rows = [dict(c, on_frontier=c["id"] in frontier) for c in measured if c["job"] == job] + \
               [c for c in extra if c["job"] == job]
        jobs_out[job] = {"title": JOBS[job].title, "what": JOBS[job].what, "cells": rows, "recommendations": recs,
                         "not_measured": {k.split("/")[1]: v for k, v in not_measured.items()
                                          if k.split("/")[0] == job}}
    for key, why in not_measured.items():
        job, engine = key.split("/")
        jobs_out.setdefault(job, {"title": JOBS[job].title, "what": JOBS[job].what, "cells": [],
                                  "recommendations": [], "not_measured": {}})["not_measured"][engine] = why
    return {"jobs": jobs_out, "prices": prices.as_dict(), "min_runs": MIN_RUNS,
            "extrapolation_model": EXTRAPOLATION_MODEL}


class UnbackedRecommendation(AssertionError):
    """A recommendation that does not rest on a measured cell with a median of at least MIN_RUNS runs."""


def verify(profile: dict[str, Any]) -> int:
    """Check every recommendation against its measured cell; returns how many were checked."""
    checked = 0
    for job, j in profile["jobs"].items():
        by_id = {c["id"]: c for c in j["cells"]}
        for rec in j["recommendations"]:
            cell = by_id.get(rec["cell"])
            if cell is None or cell.get("kind") != "measured":
                raise UnbackedRecommendation(f"{job}: recommendation {rec['cell']} is not a measured cell")
            walls = [w for w in cell["wall_s_runs"] if w is not None]
            if len(walls) < MIN_RUNS or cell["runs"] < MIN_RUNS:
                raise UnbackedRecommendation(f"{job}: {rec['cell']} has {len(walls)} run(s), needs {MIN_RUNS}")
            if abs(statistics.median(walls) - cell["wall_s"]) > 1e-9 or abs(rec["wall_s"] - cell["wall_s"]) > 1e-9:
                raise UnbackedRecommendation(f"{job}: {rec['cell']} latency is not the median of its runs")
            if rec["cell"] not in rec["frontier"]:
                raise UnbackedRecommendation(f"{job}: {rec['cell']} is not on the cost/latency frontier")
            checked += 1
    return checked
