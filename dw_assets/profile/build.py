"""One call from options to the written profile: run, summarise, verify, write JSON, HTML and charts."""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .analysis import summarize, verify
from .prices import load_prices
from .render import chart, html_page
from .runner import ProfileOptions, Run, run_dicts, run_profile


@dataclass(frozen=True)
class ProfileOutput:
    profile: dict[str, Any]
    json_path: Path
    html_path: Path
    charts: dict[str, Path]
    checked: int  # recommendations verified against their measured runs


def read_runs(path: Path) -> list[Run]:
    """Runs recorded by an earlier profile (its `runs.jsonl`, or the `runs` of its profile.json)."""
    text = path.read_text()
    rows = json.loads(text)["runs"] if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x]
    return [Run(**r) for r in rows]


def build_profile(opts: ProfileOptions, out_dir: Path, prices_path: str | None = None,
                  progress: Callable[[str], None] = print, recorded: list[Run] | None = None) -> ProfileOutput:
    """Run the profile (or take `recorded` runs, e.g. to re-price them) and write it under `out_dir`."""
    prices = load_prices(prices_path)  # a bad price file fails before any run
    started = time.time()
    load_before = os.getloadavg()
    runs, not_measured = (recorded, {}) if recorded is not None else run_profile(opts, progress)
    profile = summarize(runs, not_measured, prices, opts.latency_slack)
    load_after = os.getloadavg()
    profile.update(
        started_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        seconds=round(time.time() - started, 1),
        machine=(f"{platform.node()}: {os.cpu_count()} CPUs, load {load_before[0]:.1f} at start and "
                 f"{load_after[0]:.1f} at the end (1-min average)" if recorded is None else
                 f"summarised on {platform.node()} from {len(runs)} recorded runs (the load during them is not known)"),
        options={"jobs": opts.jobs, "engines": opts.engines, "cores": opts.cores, "scales": opts.scales,
                 "modes": opts.modes, "runs": opts.runs, "quick": opts.quick, "latency_slack": opts.latency_slack},
        runs=run_dicts(runs), recorded=recorded is not None)
    checked = verify(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = {}
    for name, job in profile["jobs"].items():
        svg = chart(job, prices.currency, "svg")
        if svg:
            charts[name] = out_dir / f"{name}.svg"
            charts[name].write_bytes(svg)
    json_path, html_path = out_dir / "profile.json", out_dir / "profile.html"
    json_path.write_text(json.dumps(profile, indent=1, default=str))
    html_path.write_text(html_page(profile))
    return ProfileOutput(profile, json_path, html_path, charts, checked)
