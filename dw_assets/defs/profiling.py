"""Dagster wiring of `dw profile`: the asset `profiling/compute_profile`, whose materialization runs the profile
(`dw_assets.profile`) and shows each job type's table, chart and recommendation in its metadata."""

import base64

import dagster as dg

from dw_assets.resources import DwSettings


class ComputeProfileConfig(dg.Config):
    """What to profile; the defaults are the full profile (`dw profile`), `quick` the CI-sized one."""

    jobs: list[str] | None = None  # default: every job type
    engines: list[str] = ["local", "spark"]
    cores: list[int] = [1, 2]
    scales: list[int] = [1, 10]
    modes: list[str] = ["alone", "concurrent"]
    runs: int = 3
    quick: bool = False
    prices_path: str | None = None  # default: profile-prices.yaml of the repository
    latency_slack: float = 1.25


@dg.asset(
    key=["profiling", "compute_profile"], group_name="profiling", kinds={"python"}, owners=["team:platform"],
    description="Which engine and size runs each job type best: every job type on the local engine and Spark "
                "(Sail) at each core count and data scale, alone and concurrently, median of >= 3 runs, priced "
                "from profile-prices.yaml, with the cost/latency Pareto frontier and a recommendation per job type.")
def compute_profile(context: dg.AssetExecutionContext, config: ComputeProfileConfig,
                    dw: DwSettings) -> dg.MaterializeResult:
    from pathlib import Path

    from dw_assets.profile.analysis import MIN_RUNS
    from dw_assets.profile.build import build_profile
    from dw_assets.profile.jobs import JOBS
    from dw_assets.profile.render import chart, markdown_table
    from dw_assets.profile.runner import ProfileOptions

    settings = dw.load()
    if config.runs < MIN_RUNS:
        raise ValueError(f"runs={config.runs}: a figure is the median of at least {MIN_RUNS} runs")
    out = Path(settings.home) / "profile"
    opts = ProfileOptions(jobs=config.jobs or list(JOBS), engines=config.engines, cores=config.cores,
                          scales=config.scales, modes=config.modes, runs=config.runs, quick=config.quick,
                          work_dir=out / "work", model_path=settings.model_path, latency_slack=config.latency_slack)
    result = build_profile(opts, out, config.prices_path, progress=context.log.info)
    profile, currency = result.profile, result.profile["prices"]["currency"]
    meta: dict[str, dg.MetadataValue | int | float | str] = {
        "recommendations": dg.MetadataValue.md("\n".join(
            f"- {r['text']}" for j in profile["jobs"].values() for r in j["recommendations"]) or "none"),
        "recommendations_checked": result.checked,
        "html": dg.MetadataValue.path(str(result.html_path)),
        "json": dg.MetadataValue.path(str(result.json_path)),
        "machine": profile["machine"],
        "prices": dg.MetadataValue.path(profile["prices"]["path"]),
    }
    for name, job in profile["jobs"].items():
        png = chart(job, currency, "png")
        text = "\n".join(f"- {e}: not measured ({why})" for e, why in job["not_measured"].items())
        if job["cells"]:
            text += "\n\n" + markdown_table(job, currency)
        if png:
            text += f"\n\n![{job['title']}](data:image/png;base64,{base64.b64encode(png).decode()})"
        meta[name] = dg.MetadataValue.md(text.strip())
    return dg.MaterializeResult(metadata=meta)
