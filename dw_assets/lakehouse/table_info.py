"""Facts about lake tables for metadata and the CLI: version, live file count, a markdown preview."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from dw_assets.settings import Settings

from .paths import Layer, open_table, table_url


def table_facts(settings: Settings, layer: Layer, client: str, table: str) -> dict[str, Any]:
    """Version and number of live data files of one table (empty dict when it does not exist)."""
    dt = open_table(settings, table_url(settings, layer, client, table))
    if dt is None:
        return {}
    return {"version": dt.version(), "files": len(dt.file_uris())}


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
