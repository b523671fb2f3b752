"""Quarantine: changes that cannot be applied wait, with their raw event, coordinates and error, in
`<lake>/quarantine/<client>/<table>` (Delta), and the table goes on.

A change whose row image does not decode (or breaks a NOT NULL column) is `failed`. Later changes of the same key
are `held` behind it, so a key's silver row stays at its last good version instead of jumping over a change it
never saw: silver is behind for that key, never silently wrong. Changes of other keys apply as usual. `retry`
re-decodes every open change of a table with the current model and code and applies what now converts, in binlog
order together with the changes held behind it; `discard` drops the failed changes (kept as `discarded`, a
record) and applies the held ones. Coordinates are the raw source and Kafka fields, so a row can be found in the
landing files, bronze and the topic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import write_deltalake

from dw_assets.contracts import LANDING_SCHEMA
from dw_assets.settings import Settings

from .commit_retry import with_commit_retry
from .paths import filesystem, join, open_table, read_table, storage_options

FAILED, HELD, RETRYING, DISCARDED = "failed", "held", "retrying", "discarded"
OPEN = (FAILED, HELD, RETRYING)  # `retrying`: taken by a retry in progress (a crash leaves them to the next one)
_EVENT_COLUMNS = list(LANDING_SCHEMA.names) + ["_dw_landing_file", "_dw_batch"]
SCHEMA = pa.schema(list(LANDING_SCHEMA) + [
    pa.field("_dw_landing_file", pa.string()), pa.field("_dw_batch", pa.int64()),
    pa.field("status", pa.string()), pa.field("error", pa.string()),
    pa.field("quarantined_at", pa.timestamp("us", tz="UTC")), pa.field("resolved_at", pa.timestamp("us", tz="UTC")),
])
_COORDS = ["kafka_topic", "kafka_partition", "kafka_offset"]
_SOURCE_ORDER = ["source_file", "source_pos", "source_row"]  # binlog order (file names sort by their number)


def quarantine_url(settings: Settings, client: str, table: str) -> str:
    return join(settings.lake_url, "quarantine", client, table)


def quarantined_clients(settings: Settings) -> list[str]:
    """Clients that have a quarantine directory (open or only discarded rows)."""
    import pyarrow.fs as pafs

    fs, root = filesystem(settings, join(settings.lake_url, "quarantine"))
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def read_quarantine(settings: Settings, client: str, table: str) -> pa.Table:
    """Every row of the table's quarantine (open and discarded); empty when there is none."""
    dt = open_table(settings, quarantine_url(settings, client, table))
    return SCHEMA.empty_table() if dt is None else read_table(dt).cast(SCHEMA)


def open_rows(settings: Settings, client: str, table: str) -> pa.Table:
    q = read_quarantine(settings, client, table)
    return q.filter(pc.is_in(q["status"], pa.array(OPEN)))


@dataclass
class Held:
    """The outcome of `hold` for one batch of a table's events."""

    apply_rows: pa.Array  # indices into the events that go on to silver
    failed: int = 0
    held: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the apply result


def hold(settings: Settings, client: str, table: str, events: pa.Table, failed_rows: pa.Table,
         candidate_rows: pa.Array, now: datetime) -> Held:
    """Quarantine the failed changes of `events` and hold every later change of their keys (and of keys
    already in quarantine); return the rows that apply.

    `failed_rows` is `row` (index into `events`) and `error`; `candidate_rows` the indices of the rows that
    decoded. "Later" is binlog order (source file, position, row: the raw source fields); a re-read of events
    already in quarantine (same topic, partition, offset) does not add them twice.
    """
    existing = open_rows(settings, client, table)
    blocked = existing.filter(pc.not_equal(existing["status"], RETRYING))
    if not failed_rows.num_rows and not blocked.num_rows:
        return Held(candidate_rows)
    ev = pl.from_arrow(events.select(["key", *_COORDS, *_SOURCE_ORDER])).with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64))
    ev = ev.join(pl.from_arrow(failed_rows), on="row", how="left").sort(_SOURCE_ORDER, nulls_last=False)
    prior = pl.from_arrow(blocked.select(["key"]))["key"].drop_nulls().unique()
    failed_here = pl.col("error").is_not_null().cast(pl.Int32)
    # In source (binlog) order: a change with a failed change of its key before it is held.
    after_failure = (failed_here.cum_sum().over("key") - failed_here) > 0
    held_mask = pl.col("error").is_null() & pl.col("key").is_not_null() & (
        pl.col("key").is_in(prior.implode()) | after_failure)
    ev = ev.with_columns(
        status=pl.when(pl.col("error").is_not_null()).then(pl.lit(FAILED))
        .when(held_mask).then(pl.lit(HELD)).otherwise(pl.lit(None, pl.String)),
        reason=pl.when(held_mask).then(pl.lit("held: an earlier change of key ") + pl.col("key")
                                       + pl.lit(" is in quarantine")).otherwise(pl.col("error")))
    out = ev.filter(pl.col("status").is_not_null())
    apply = candidate_rows.filter(pc.invert(pc.is_in(candidate_rows, pa.array(out["row"].to_numpy()))))
    if out.height:
        rows = events.take(pa.array(out["row"].to_numpy()))
        _append(settings, client, table, rows, out["status"].to_list(), out["reason"].to_list(), existing, now)
    errors = out.filter(pl.col("status") == FAILED)["reason"].head(3).to_list()
    return Held(apply, int((out["status"] == FAILED).sum()), int((out["status"] == HELD).sum()), errors)


def _rows(events: pa.Table, status: Sequence[str], error: Sequence[str], now: datetime) -> pa.Table:
    n = events.num_rows
    ts = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    return (events.select(_EVENT_COLUMNS).append_column("status", pa.array(status, pa.string()))
            .append_column("error", pa.array(error, pa.string())).append_column("quarantined_at", ts)
            .append_column("resolved_at", pa.nulls(n, pa.timestamp("us", tz="UTC"))).cast(SCHEMA))


def _append(settings: Settings, client: str, table: str, events: pa.Table, status: Sequence[str],
            error: Sequence[str], existing: pa.Table, now: datetime) -> None:
    rows = _rows(events, status, error, now)
    if existing.num_rows:  # an event re-read (catch-up from bronze, redelivery) is quarantined once
        seen = pl.from_arrow(existing.filter(pc.not_equal(existing["status"], RETRYING)).select(_COORDS))
        rows = pl.from_arrow(rows).join(seen, on=_COORDS, how="anti").to_arrow().cast(SCHEMA)
    if not rows.num_rows:
        return
    url = quarantine_url(settings, client, table)
    with_commit_retry(lambda: write_deltalake(url, rows, mode="append", storage_options=storage_options(
        settings, url)), f"quarantine append {client}.{table}")


def rewrite(settings: Settings, client: str, table: str, rows: pa.Table) -> None:
    """Replace the table's quarantine by `rows` (it is small: only what waits and what was discarded)."""
    url = quarantine_url(settings, client, table)
    with_commit_retry(lambda: write_deltalake(url, rows.cast(SCHEMA), mode="overwrite", storage_options=storage_options(
        settings, url)), f"quarantine rewrite {client}.{table}")


def set_status(settings: Settings, client: str, table: str, from_status: Sequence[str], to_status: str,
               now: datetime | None = None) -> pa.Table:
    """Move rows in `from_status` to `to_status`; returns the moved rows (with their old status)."""
    q = read_quarantine(settings, client, table)
    mask = pc.is_in(q["status"], pa.array(list(from_status), pa.string()))
    moved = q.filter(mask)
    if moved.num_rows:
        status = pc.if_else(mask, pa.scalar(to_status), q["status"])
        resolved = pc.if_else(mask, pa.scalar(now or datetime.now(timezone.utc), pa.timestamp("us", tz="UTC")),
                              q["resolved_at"]) if to_status == DISCARDED else q["resolved_at"]
        rewrite(settings, client, table, q.set_column(q.schema.get_field_index("status"), "status", status)
                .set_column(q.schema.get_field_index("resolved_at"), "resolved_at", resolved))
    return moved


def drop_status(settings: Settings, client: str, table: str, status: str) -> None:
    q = read_quarantine(settings, client, table)
    keep = pc.not_equal(q["status"], status)
    if not pc.all(keep).as_py():
        rewrite(settings, client, table, q.filter(keep))


def restore(settings: Settings, client: str, table: str, taken: pa.Table) -> None:
    """Put rows a retry took (`set_status` to RETRYING) back as they were."""
    q = read_quarantine(settings, client, table)
    rewrite(settings, client, table, pa.concat_tables([q.filter(pc.not_equal(q["status"], RETRYING)),
                                                       taken.cast(SCHEMA)]))


def in_source_order(rows: pa.Table) -> pa.Table:
    return rows.sort_by([(c, "ascending") for c in _COORDS])
