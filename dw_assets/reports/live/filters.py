"""Filters a report declares in its SQL file, applied to the report's result with bound parameters.

A report opts in with comment lines in its query (ignored by DuckDB, so gold builds are unchanged):

    -- filter: order_date date_range
    -- filter: currency choice

`date_range` offers from/to dates on a DATE or TIMESTAMP result column, `choice` a pick-list of the column's
values. Filters act on the result (like a dashboard's filter widget), so a filtered page shows exactly the gold
rows in the range; the values are bound as DuckDB parameters, the column is checked against the result and
quoted, nothing is formatted into SQL.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Mapping

import duckdb
import pyarrow as pa

from ..catalog import ReportDefinitionError, ReportSpec

KINDS = ("date_range", "choice")
_FILTER_RE = re.compile(r"^\s*--\s*filter:\s*(?P<column>[A-Za-z_][A-Za-z0-9_]*)\s+(?P<kind>\w+)\s*$", re.MULTILINE)
# Page parameters of the date range; a choice filter's parameter is its column name (repeatable).
DATE_FROM, DATE_TO = "from", "to"


class FilterError(ValueError):
    """A filter value from the page that cannot be used (a 400, naming the parameter)."""


@dataclass(frozen=True)
class FilterSpec:
    column: str
    kind: str


@dataclass(frozen=True)
class FilterValues:
    """What the page asked for: a date range and picked values per choice column."""

    date_from: date | None = None
    date_to: date | None = None
    choices: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def empty(self) -> bool:
        return self.date_from is None and self.date_to is None and not self.choices

    def picked(self, column: str) -> tuple[str, ...]:
        return dict(self.choices).get(column, ())

    def query_string(self) -> str:
        from urllib.parse import urlencode

        pairs = [(k, v.isoformat()) for k, v in ((DATE_FROM, self.date_from), (DATE_TO, self.date_to)) if v]
        pairs += [(c, v) for c, vs in self.choices for v in vs]
        return urlencode(pairs)


def declared_filters(spec: ReportSpec) -> tuple[FilterSpec, ...]:
    out = []
    for m in _FILTER_RE.finditer(spec.sql):
        if m["kind"] not in KINDS:
            raise ReportDefinitionError(f"{spec.path or spec.name}: filter kind {m['kind']!r} on {m['column']}: "
                                        f"one of {', '.join(KINDS)}")
        out.append(FilterSpec(m["column"], m["kind"]))
    return tuple(out)


def _date(params: Mapping[str, str], name: str) -> date | None:
    raw = (params.get(name) or "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise FilterError(f"parameter {name!r}: {raw[:40]!r} is not a date (YYYY-MM-DD)") from None


def parse_values(params: Mapping[str, str], multi: Mapping[str, list[str]], choice_columns: set[str]) -> FilterValues:
    """Filter values from a request's query parameters (`multi`: every value of a repeated parameter)."""
    lo, hi = _date(params, DATE_FROM), _date(params, DATE_TO)
    if lo and hi and lo > hi:
        raise FilterError(f"date range: from {lo} is after to {hi}")
    choices = tuple((c, tuple(v for v in multi.get(c, []) if v)) for c in sorted(choice_columns))
    return FilterValues(lo, hi, tuple((c, v) for c, v in choices if v))


def _quoted(column: str) -> str:
    # DuckDB identifier quoting; the name already matched _FILTER_RE and is a column of the result.
    return '"' + column.replace('"', '""') + '"'


def _check_column(spec: ReportSpec, table: pa.Table, f: FilterSpec) -> pa.DataType:
    if f.column not in table.column_names:
        raise ReportDefinitionError(f"{spec.path or spec.name}: filter on {f.column!r}, which the result lacks "
                                    f"(columns: {', '.join(table.column_names)})")
    t = table.schema.field(f.column).type
    if f.kind == "date_range" and not (pa.types.is_date(t) or pa.types.is_timestamp(t)):
        raise ReportDefinitionError(f"{spec.path or spec.name}: date_range filter on {f.column!r} of type {t}")
    return t


def apply_filters(spec: ReportSpec, table: pa.Table, values: FilterValues) -> pa.Table:
    """The rows of a report result that pass the page's filters (the result itself when none applies)."""
    where, params = [], []
    for f in declared_filters(spec):
        _check_column(spec, table, f)
        col = _quoted(f.column)
        if f.kind == "date_range":
            if values.date_from:
                where.append(f"CAST(r.{col} AS DATE) >= ?")
                params.append(values.date_from)
            if values.date_to:
                where.append(f"CAST(r.{col} AS DATE) <= ?")
                params.append(values.date_to)
        elif values.picked(f.column):
            where.append(f"list_contains(?, CAST(r.{col} AS VARCHAR))")
            params.append(list(values.picked(f.column)))
    if not where:
        return table
    con = duckdb.connect()
    try:
        con.register("r_in", table)
        return con.sql(f"SELECT * FROM r_in AS r WHERE {' AND '.join(where)}", params=params).to_arrow_table()
    finally:
        con.close()


def choice_values(spec: ReportSpec, table: pa.Table, column: str) -> list[str]:
    """The values a choice filter can pick from (those in the unfiltered result)."""
    if column not in table.column_names:
        return []
    return sorted({str(v) for v in table.column(column).to_pylist() if v is not None})
