"""The report catalogue: one `<report>.sql` file per report in the folder the model names (`reports:` in the
model file, or DW_REPORTS_SQL_DIR), with a YAML front matter block on top. A model without one has no reports.

The front matter (`/*--- ... ---*/`) carries the title, description and chart; the silver tables a report reads
are parsed from the SQL itself (DuckDB's parser), so lineage can never drift from the query.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import duckdb
import yaml

from dw_assets.model import StandardModel, load_model

_FRONT_MATTER_RE = re.compile(r"\A\s*/\*---\s*\n(?P<yaml>.*?)\n---\*/\s*\n(?P<sql>.*)\Z", re.DOTALL)
_REPORT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ReportDefinitionError(ValueError):
    """A report file that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ReportSpec:
    name: str  # the file's stem: gold table, asset key and HTML file name
    title: str
    description: str
    sql: str  # the query without its front matter
    silver_tables: tuple[str, ...]  # model tables the query reads, in model (dependency) order
    chart: Mapping[str, Any] = field(default_factory=dict, hash=False)
    # How pages show the result: `sort` ([[column, ascending|descending], ...]) and `rows` (HTML row cap).
    preview: Mapping[str, Any] = field(default_factory=dict, hash=False)
    path: Path | None = None


def parse_front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    m = _FRONT_MATTER_RE.match(text)
    if not m:
        raise ReportDefinitionError(f"{source}: must start with a /*--- YAML front matter ---*/ block")
    try:
        meta = yaml.safe_load(m["yaml"]) or {}
    except yaml.YAMLError as e:
        raise ReportDefinitionError(f"{source}: front matter is not valid YAML: {e}") from None
    if not isinstance(meta, dict):
        raise ReportDefinitionError(f"{source}: front matter must be a mapping")
    return meta, m["sql"].strip().rstrip(";")


def referenced_tables(sql: str) -> set[str]:
    """Base tables a query reads (CTE names excluded), from DuckDB's parse tree: no binding, so no catalog."""
    con = duckdb.connect()
    try:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        con.close()
    if tree.get("error"):
        raise ReportDefinitionError(tree.get("error_message", "SQL does not parse"))
    tables: set[str] = set()
    ctes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and node.get("table_name"):
                tables.add(node["table_name"])
            for entry in (node.get("cte_map") or {}).get("map", []) if isinstance(node.get("cte_map"), dict) else []:
                ctes.add(entry.get("key", ""))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return tables - ctes


def parse_report(path: Path, model: StandardModel) -> ReportSpec:
    name = path.stem
    if not _REPORT_NAME_RE.fullmatch(name):
        raise ReportDefinitionError(f"{path}: report names must match {_REPORT_NAME_RE.pattern}")
    meta, sql = parse_front_matter(path.read_text(encoding="utf-8"), str(path))
    unknown = set(meta) - {"title", "description", "chart", "preview"}
    if unknown:
        raise ReportDefinitionError(f"{path}: unknown front matter key(s) {sorted(unknown)}")
    try:
        used = referenced_tables(sql)
    except ReportDefinitionError as e:
        raise ReportDefinitionError(f"{path}: {e}") from None
    not_in_model = used - set(model.table_names)
    if not_in_model:
        # The engine registers exactly the model's tables; anything else would fail at run time, so fail early.
        raise ReportDefinitionError(f"{path}: reads table(s) {', '.join(sorted(not_in_model))} not in model "
                                    f"{model.version} ({model.source or 'in memory'})")
    if not used:
        raise ReportDefinitionError(f"{path}: reads no model table")
    return ReportSpec(name=name, title=str(meta.get("title") or name.replace("_", " ").capitalize()),
                      description=str(meta.get("description") or "").strip(), sql=sql,
                      silver_tables=tuple(t for t in model.table_names if t in used),
                      chart=dict(meta.get("chart") or {}), preview=dict(meta.get("preview") or {}), path=path)


@lru_cache(maxsize=4)
def _load(sql_dir: Path, model: StandardModel) -> tuple[ReportSpec, ...]:
    return tuple(parse_report(p, model) for p in sorted(sql_dir.glob("*.sql")))


def load_reports(model: StandardModel | None = None, sql_dir: Path | None = None) -> tuple[ReportSpec, ...]:
    """Every report of `model` (default: the shipped one) in `sql_dir` (default: the model's report folder), sorted
    by name, each validated against the model; () for a model without reports."""
    model = model or load_model()
    folder = sql_dir or model.reports_dir
    if folder is None:
        return ()
    return _load(Path(folder).resolve(), model)


def report(name: str, model: StandardModel | None = None) -> ReportSpec:
    for r in load_reports(model):
        if r.name == name:
            return r
    have = ", ".join(r.name for r in load_reports(model)) or "none: the model has no reports"
    raise KeyError(f"no report named {name!r} (have: {have})")
