"""Facts about lake tables for metadata and the CLI: version, live file count, a markdown preview."""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from dw_assets.settings import Settings

from .paths import Layer, layer_table
from .tables import BRONZE_TABLE


def table_facts(settings: Settings, layer: Layer, client: str, table: str) -> dict[str, Any]:
    """Version, live data files and rows of one table (empty dict when it does not exist).

    Rows come from the file statistics in the log (no data file is read); absent statistics leave it out.
    """
    dt, where = layer_table(settings, layer, client, table)
    if dt is None:
        return {}
    actions = pa.table(dt.get_add_actions(flatten=True))
    if where is not None:  # bronze: the table's partition of the client's bronze
        actions = actions.filter(pa.compute.equal(actions[f"partition.{BRONZE_TABLE}"], table))
    facts: dict[str, Any] = {"version": dt.version(), "files": actions.num_rows}
    if "num_records" in actions.column_names and actions["num_records"].null_count == 0:
        facts["rows"] = int(pa.compute.sum(actions["num_records"]).as_py() or 0)
    return facts


def table_head(settings: Settings, layer: Layer, client: str, table: str, limit: int) -> pa.Table | None:
    """The first `limit` rows of one table, reading only as many files as that takes."""
    dt, where = layer_table(settings, layer, client, table)
    return None if dt is None else dt.to_pyarrow_dataset().head(limit, filter=where)


def preview_markdown(t: pa.Table, limit: int = 10, max_width: int = 40) -> str:
    """The first `limit` rows as a markdown table (values shortened; no extra dependency like tabulate)."""
    def cell(v: Any) -> str:
        s = "" if v is None else (v.hex()[:16] + "…" if isinstance(v, bytes) else str(v))
        s = s.replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    cols = t.column_names
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in t.slice(0, limit).to_pylist():
        lines.append("| " + " | ".join(cell(row[c]) for c in cols) + " |")
    return "\n".join(lines)
