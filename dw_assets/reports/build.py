"""One call per scope from silver to HTML: compute and write the gold tables, then render their pages.

Used by `dw reports build`; the Dagster assets call `gold` and `render` separately so each step is its own
asset with its own metadata.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from .catalog import load_reports
from .engine import NoSilverData
from .gold import GoldResult, build_client_gold, build_portfolio_gold
from .render import write_index, write_scope_reports

log = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    results: dict[str, list[GoldResult]] = field(default_factory=dict)  # scope -> gold results
    pages: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # scope -> why
    index: Path | None = None
    no_reports: str | None = None  # set when the model has no reports: why nothing was built


def no_reports_reason(model: StandardModel) -> str | None:
    """Why `model` has no reports (None: it has some). Loading them validates the SQL against the model."""
    if load_reports(model):
        return None
    if model.reports_dir is None:
        return f"model {model.version} ({model.source}) names no report folder (`reports:`)"
    return f"the report folder {model.reports_dir} of model {model.version} holds no .sql file"


def build_client_reports(settings: Settings, client: str, reports: Iterable[str] | None = None,
                         model: StandardModel | None = None) -> tuple[list[GoldResult], list[Path]]:
    results = build_client_gold(settings, client, reports, model)
    return results, write_scope_reports(settings.reports_dir, results)


def build_portfolio_reports(settings: Settings, clients: Sequence[str], reports: Iterable[str] | None = None,
                            model: StandardModel | None = None) -> tuple[list[GoldResult], list[Path]]:
    results = build_portfolio_gold(settings, clients, reports, model)
    return results, write_scope_reports(settings.reports_dir, results)


def build_reports(settings: Settings, clients: Sequence[str], portfolio: bool = True,
                  reports: Iterable[str] | None = None, model: StandardModel | None = None) -> BuildSummary:
    """Every client's reports, then (optionally) the portfolio over the clients that had data, then the index."""
    model = model or settings.standard_model()
    wanted = list(reports) if reports is not None else None
    summary = BuildSummary(no_reports=no_reports_reason(model))
    if summary.no_reports:
        return summary
    for client in clients:
        try:
            results, pages = build_client_reports(settings, client, wanted, model)
        except NoSilverData as e:
            # A client onboarded but not yet in silver: skip it, the others are still worth building.
            log.warning("skipping %s: %s", client, e)
            summary.skipped[client] = str(e)
            continue
        summary.results[client], summary.pages = results, summary.pages + pages
    built = [c for c in clients if c in summary.results]
    if portfolio and built:
        results, pages = build_portfolio_reports(settings, built, wanted, model)
        summary.results[results[0].scope], summary.pages = results, summary.pages + pages
    summary.index = write_index(settings.reports_dir)
    return summary
