"""`python -m dw_assets.bench.worker STAGE --home H --out F [--quick]`: one stage benchmark in a process of its own.

The runner starts this against a fresh stack and reads the worker's peak RSS from wait4; the worker writes the
stage's `StageResult` as JSON to F, also when the stage fails (status "failed" and the error).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from pathlib import Path

from dw_assets.settings import Settings, load_settings

from .harness import StageResult
from .smoke import smoke

STAGES = ("cli", "cdc", "landing", "apply", "reports", "live", "e2e", "onboard", "reconcile", "scale", "spark",
          "spark-reports")


def run_stage(stage: str, settings: Settings, quick: bool, work: Path) -> StageResult:
    from . import stages

    if stage == "cli":
        return stages.bench_cli(settings, quick)
    if stage == "cdc":
        return stages.bench_cdc(settings, quick)
    if stage == "landing":
        return stages.bench_landing(settings, quick)
    if stage == "apply":
        return stages.bench_apply(settings, quick)
    if stage == "reports":
        return stages.bench_reports(settings, quick)
    if stage == "live":
        return stages.bench_live(settings, quick)
    if stage == "onboard":
        return stages.bench_onboard(settings, quick)
    if stage == "reconcile":
        return stages.bench_reconcile(settings, quick)
    if stage == "e2e":
        from .e2e import run_e2e_bench

        # The product's default path: capture + `dw ingest run`; the full run adds the Dagster sensor mode beside it.
        result = run_e2e_bench(settings, "service", quick=quick, work_dir=work / "e2e")
        rss = {k: v for k, v in result.processes.items() if k in ("capture service", "ingest service")}
        for f in result.figures:
            f.extra.setdefault("peak_rss_mb", rss)
        if not quick:  # the second load, on the same stack with clients of its own
            from .e2e import E2EParams

            wide = run_e2e_bench(settings, "service", params=E2EParams.wide(), work_dir=work / "e2e-wide")
            for f in wide.figures:  # the Dagster mode takes the 10-client figures as its reference, by key
                if f.extra.get("key"):
                    f.extra["key"] = "wide_" + f.extra["key"]
            result.figures += wide.figures
            result.notes += [f"50 clients: {n}" for n in wide.notes]
        # The full run measures the Dagster mode on a stack of its own (stage "e2e-dagster"); the suite's smoke run
        # leaves it out (the demo tests run that path).
        if quick and not smoke():
            dagster = run_e2e_bench(settings, "dagster", quick=True)
            result.figures += dagster.figures
            result.notes += dagster.notes
        return result
    if stage == "e2e-continuous":
        from .e2e import run_e2e_bench

        return run_e2e_bench(settings, "continuous", quick=quick, work_dir=work / "e2e-continuous")
    if stage == "e2e-dagster":
        from .e2e import run_e2e_bench

        return run_e2e_bench(settings, "dagster", quick=quick, work_dir=work / "e2e-dagster")
    if stage == "spark":
        from dw_assets.engine.bench import run_spark_bench

        return run_spark_bench(quick, work_dir=work / "spark")
    if stage == "spark-reports":
        return stages.bench_spark_reports(settings, quick)
    if stage == "scale":
        from .scale import run_scale_bench

        return run_scale_bench(settings, quick=quick, work_dir=work / "scale")
    raise ValueError(f"unknown stage {stage!r}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dw_assets.bench.worker")
    ap.add_argument("stage", choices=STAGES + ("e2e-dagster", "e2e-continuous"))
    ap.add_argument("--home", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dw_assets.bench").setLevel(logging.INFO)  # phase timestamps in the worker's log
    settings = load_settings(env={}, home=args.home)
    started = time.perf_counter()
    try:
        result = run_stage(args.stage, settings, args.quick, Path(args.home))
    except Exception as e:  # noqa: BLE001 - reported in the result file; the runner goes on with other stages
        traceback.print_exc()
        result = StageResult(args.stage, status="failed", error=f"{e.__class__.__name__}: {e}")
    result.seconds = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main())
