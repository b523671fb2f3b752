"""`dw profile`: which engine and size runs each job type best, measured with its cost."""
from __future__ import annotations

import argparse
from pathlib import Path

from dw_assets.settings import Settings

MODES = ("alone", "concurrent")


def _list(kind: str, choices: tuple[str, ...] | None = None, number: bool = False):
    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",") if x.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        if number:
            try:
                values = [int(x) for x in items]
            except ValueError:
                raise argparse.ArgumentTypeError(f"{kind} must be whole numbers, got {text!r}") from None
            if any(v < 1 for v in values):
                raise argparse.ArgumentTypeError(f"{kind} must be at least 1, got {text!r}")
            return values
        unknown = [x for x in items if choices and x not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {kind} {', '.join(unknown)} (one of {', '.join(choices)})")
        return items
    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    from .jobs import ENGINES, JOBS  # light: no stage imported at module level there

    p = subparsers.add_parser("profile", help="compute profile: each job type on each engine, core count and scale, "
                                              "with its cost and a recommendation")
    p.add_argument("--jobs", type=_list("job", tuple(JOBS)), help=f"job types (default all: {','.join(JOBS)})")
    p.add_argument("--engines", type=_list("engine", ENGINES),
                   help="engines (default local,spark; --quick: local)")
    p.add_argument("--cores", type=_list("cores", number=True), help="core counts, by CPU affinity (default 1,2)")
    p.add_argument("--scale", type=_list("scale", number=True), dest="scales",
                   help="data scales, multiples of the base sizes (default 1,10; --quick: 1)")
    p.add_argument("--modes", type=_list("mode", MODES), help="alone and/or concurrent (default both; --quick: alone)")
    p.add_argument("--runs", type=int, default=3, help="runs per configuration, at least 3 (median; default 3)")
    p.add_argument("--quick", action="store_true", help="small data (a tenth of the base sizes), local engine, "
                                                        "alone, scale 1: what CI runs")
    p.add_argument("--prices", help="price file (default: profile-prices.yaml of the repository)")
    p.add_argument("--out", help="output directory (default: $DW_HOME/profile)")
    p.add_argument("--latency-slack", type=float, default=1.25,
                   help="a recommendation may be this many times slower than the fastest, if cheaper (default 1.25)")
    p.add_argument("--from-runs", metavar="FILE",
                   help="no new runs: summarise and price the runs recorded by an earlier profile (its "
                        "work/runs.jsonl or profile.json), e.g. after changing the price file")
    p.set_defaults(func=cmd_profile)


def cmd_profile(args: argparse.Namespace, settings: Settings) -> int:
    from dw_assets.cli import CommandError

    from .analysis import MIN_RUNS, UnbackedRecommendation
    from .build import build_profile
    from .jobs import JOBS
    from .prices import PriceFileError
    from .render import summary_markdown
    from .runner import ProfileError, ProfileOptions

    if args.runs < MIN_RUNS:
        raise CommandError(f"--runs {args.runs}: a figure is the median of at least {MIN_RUNS} runs")
    if args.latency_slack < 1:
        raise CommandError(f"--latency-slack {args.latency_slack}: must be at least 1")
    out = Path(args.out) if args.out else Path(settings.home) / "profile"
    opts = ProfileOptions(
        jobs=args.jobs or list(JOBS), engines=args.engines or (["local"] if args.quick else ["local", "spark"]),
        cores=args.cores or [1, 2], scales=args.scales or ([1] if args.quick else [1, 10]),
        modes=args.modes or (["alone"] if args.quick else list(MODES)), runs=args.runs, quick=args.quick,
        work_dir=out / "work", model_path=settings.model_path, latency_slack=args.latency_slack)
    recorded = None
    if args.from_runs:
        from .build import read_runs

        try:
            recorded = read_runs(Path(args.from_runs))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise CommandError(f"--from-runs {args.from_runs}: not a profile's runs ({e})") from None
    try:
        result = build_profile(opts, out, args.prices, recorded=recorded)
    except PriceFileError as e:
        raise CommandError(str(e)) from None
    except UnbackedRecommendation as e:
        raise CommandError(f"profile check failed: {e}", code=1) from None
    except ProfileError as e:
        raise CommandError(str(e)) from None
    print(summary_markdown(result.profile))
    print(f"\n{result.checked} recommendation(s) checked against their measured runs (median of >= {MIN_RUNS}); "
          f"{result.profile['seconds']} s")
    print(f"JSON: {result.json_path}\nHTML: {result.html_path}")
    return 0
