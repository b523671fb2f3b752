"""`dw bench [STAGE ...] [--quick] [--json PATH]`: run the benchmarks, each on a fresh stack, and write the JSON
result and the markdown table for the README (default `bench-results/latest.json` and `.md`)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from dw_assets.settings import Settings

from .smoke import SMOKE_ENV
from .worker import STAGES

console = Console()


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="benchmarks: each stage against its reference, median of several runs",
        description="Each stage runs on a fresh stack of its own (free ports, temporary state directory): a warm-up, "
                    "then at least 3 measured repetitions. Stages: all, " + ", ".join(STAGES) + ".")
    p.add_argument("stages", nargs="*", metavar="STAGE", help="all (default) or any of: " + ", ".join(STAGES))
    p.add_argument("--quick", action="store_true", help="a tenth of the sizes (the whole set in under 5 minutes)")
    p.add_argument("--smoke", action="store_true",
                   help="a tenth of the quick sizes: proves every stage runs and reports, figures not comparable "
                        "(the test suite's run)")
    p.add_argument("--json", type=Path, default=Path("bench-results/latest.json"),
                   help="result file (default bench-results/latest.json); the markdown table goes beside it (.md)")
    p.add_argument("--markdown", type=Path, help="markdown table path (default: the JSON path with .md)")
    p.add_argument("--keep", action="store_true", help="keep each stage's temporary state directory and its logs")
    p.add_argument("--update", action="store_true",
                   help="replace only these stages in an existing --json result (the others are kept) and rewrite "
                        "the markdown; the re-run is listed under the machine line")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from dw_assets.cli import CommandError

    from .harness import StageResult, figure_row
    from .runner import run_benchmarks

    stages = list(STAGES) if not args.stages or "all" in args.stages else list(dict.fromkeys(args.stages))
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise CommandError(f"unknown stage(s): {', '.join(unknown)} (choose from all, {', '.join(STAGES)})")
    if args.smoke:
        os.environ[SMOKE_ENV] = "1"  # read by every stage worker (see bench/smoke.py)
    quick = args.quick or args.smoke
    flag = " --smoke" if args.smoke else " --quick" if quick else ""
    command = "dw bench " + " ".join(args.stages or ["all"]) + flag
    result = run_benchmarks(stages, quick, args.json, args.markdown, keep=args.keep,
                            progress=lambda m: console.print(f"[dim]{m}[/]"), command=command, update=args.update)
    md = args.markdown or args.json.with_suffix(".md")
    for s in result["stages"]:
        if s["stage"] not in stages:
            continue
        for f in StageResult.from_dict(s).figures:
            console.print(figure_row(f), markup=False, soft_wrap=True)
    console.print(f"{len(stages)} stage(s) in {result['seconds']:.0f} s; results: {args.json} and {md}")
    failed = [s["stage"] for s in result["stages"] if s["status"] == "failed"]
    if failed:
        console.print(f"[bold red]failed:[/] {', '.join(failed)} (logs under {args.json.parent / 'logs'})")
        return 1
    return 0
