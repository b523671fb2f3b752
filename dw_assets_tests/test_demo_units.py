"""`dw demo` pieces that need no services: the CLI, the freshness marker choice and percentiles, the summary verdict."""
from __future__ import annotations

from datetime import datetime

import pytest

from dw_assets.checks.silver_equality import TableEquality
from dw_assets.cli import build_parser
from dw_assets.demo.freshness import FreshnessStats, Marker, marker_target, percentile
from dw_assets.demo.summary import ClientSummary, DemoSummary
from dw_assets.model import load_model


def test_cli_parses_demo_options():
    args = build_parser().parse_args(["demo", "--duration", "60", "--no-ui", "--clients", "2", "--rate", "300"])
    assert (args.duration, args.no_ui, args.clients, args.rate, args.ui_port) == (60.0, True, 2, 300.0, 3000)
    default = build_parser().parse_args(["demo"])
    assert default.duration is None and not default.no_ui and default.rate == 500 and default.clients == 3


def test_marker_target_is_a_readable_microsecond_column_of_an_undeleted_table():
    model = load_model()
    t = marker_target(model)
    table = model.table(t.table)
    assert table.workload.delete_weight == 0 and table.options.column_mapping != "name"
    assert table.primary_key == t.key_columns and "microsecond" in str(t)
    col = table.column(t.column)
    assert col.role == "updated_at" and col.data_type.upper().endswith("(6)")


@pytest.mark.parametrize("p, expected", [(50, 3.0), (95, 5.0), (0, 1.0), (100, 5.0)])
def test_percentile_nearest_rank(p, expected):
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], p) == expected


def test_percentile_of_nothing_is_none_and_stats_say_so():
    assert percentile([], 95) is None
    assert "no sample" in FreshnessStats([], pending=2).describe()
    s = FreshnessStats([10.0, 20.0, 30.0])
    assert (s.p50, s.p95, s.max) == (20.0, 30.0, 30.0)


def test_marker_latency():
    m = Marker("c", datetime(2026, 1, 1), committed_at=100.0)
    assert m.latency_s is None
    m.seen_at = 112.5
    assert m.latency_s == 12.5


def test_summary_ok_only_when_every_table_of_every_client_is_equal():
    equal = [TableEquality("a", 3, 3), TableEquality("b", 0, 0)]
    short = [TableEquality("a", 3, 2)]
    assert DemoSummary([ClientSummary("c1", "c1", equality=equal)], FreshnessStats(), 1.0).ok
    assert not DemoSummary([ClientSummary("c1", "c1", equality=equal), ClientSummary("c2", "c2", equality=short)],
                           FreshnessStats(), 1.0).ok
    assert not DemoSummary([ClientSummary("c1", "c1")], FreshnessStats(), 1.0).ok  # nothing compared
    assert not DemoSummary([], FreshnessStats(), 1.0).ok
    missing = TableEquality("a", 3, 0, error="no Delta table")
    assert not missing.equal and "no Delta table" in missing.describe("c1")
