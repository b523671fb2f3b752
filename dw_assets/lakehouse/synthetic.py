"""Synthetic change events written as landing files by the contract, for tests and the apply benchmark.

`LandingFeed` plays the part of capture + landing writer: it numbers binlog positions and Kafka offsets, keeps
the last image per key (for `before`), and writes Confluent-S3-sink-named Parquet files in LANDING_SCHEMA.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from dw_assets.contracts import LANDING_SCHEMA, data_topic, landing_object_key
from dw_assets.settings import Settings

from .paths import filesystem

BINLOG_FILE = "dw-bin.{:06d}"


def write_landing_table(settings: Settings, topic: str, partition: int, start_offset: int, table: pa.Table) -> str:
    """Write one landing file; returns its key relative to the landing root."""
    fs, root = filesystem(settings, settings.landing_url)
    key = landing_object_key(topic, partition, start_offset)
    path = f"{root}/{key}"
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    pq.write_table(table.cast(LANDING_SCHEMA), path, filesystem=fs)
    return key


class LandingFeed:
    """Builds change events for one client database and writes them as landing files."""

    def __init__(self, settings: Settings, database: str, keys: dict[str, Sequence[str]], binlog_file: int = 1):
        self.settings, self.database, self.keys = settings, database, keys
        self.file_no, self.pos = binlog_file, 4
        self.offsets: dict[tuple[str, int], int] = {}
        self.images: dict[tuple[str, tuple], dict[str, Any]] = {}
        self.ts_ms = 1_700_000_000_000

    def rotate(self) -> None:
        """Continue in the next binlog file (as the server does at max_binlog_size or FLUSH LOGS)."""
        self.file_no, self.pos = self.file_no + 1, 4

    def topic(self, table: str) -> str:
        return data_topic(self.settings.kafka.topic_prefix, self.database, table)

    def events(self, table: str, changes: Iterable[tuple[str, dict[str, Any] | None]]) -> list[dict[str, Any]]:
        """One event per (op, row): c/u/r take the full new row, d the key (or row), t None.

        Every change is its own binlog event at the next position, like autocommit statements.
        """
        out = []
        for op, row in changes:
            self.pos += 100
            self.ts_ms += 1
            key_cols = self.keys[table]
            before = after = None
            key = None
            if op != "t":
                assert row is not None
                k = tuple(row[c] for c in key_cols)
                key = json.dumps({c: row[c] for c in key_cols})
                old = self.images.get((table, k))
                if op in ("c", "u", "r"):
                    after = dict(row)
                    before = old if op == "u" else None
                    self.images[(table, k)] = after
                else:
                    before = old or dict(row)
                    self.images.pop((table, k), None)
            else:
                for ik in [ik for ik in self.images if ik[0] == table]:
                    del self.images[ik]
            out.append(self.event(table, op, key, before, after, self.pos))
        return out

    def event(self, table: str, op: str, key: str | None, before: dict | None, after: dict | None, pos: int,
              row: int = 0) -> dict[str, Any]:
        return {
            "kafka_topic": self.topic(table), "kafka_partition": 0, "kafka_offset": 0, "kafka_timestamp_ms": self.ts_ms,
            "key": key, "op": op,
            "before": json.dumps(before) if before is not None else None,
            "after": json.dumps(after) if after is not None else None,
            "ts_ms": self.ts_ms, "source_db": self.database, "source_table": table, "source_ts_ms": self.ts_ms,
            "source_snapshot": "true" if op == "r" else "false", "source_server_id": 1, "source_gtid": None,
            "source_file": BINLOG_FILE.format(self.file_no), "source_pos": pos, "source_row": row,
            "transaction_id": None,
        }

    def write(self, table: str, events: list[dict[str, Any]], partition: int = 0) -> str:
        """Write `events` as the next landing file of the table's topic partition (offsets assigned here)."""
        topic = self.topic(table)
        start = self.offsets.get((topic, partition), 0)
        rows = [dict(e, kafka_partition=partition, kafka_offset=start + i) for i, e in enumerate(events)]
        self.offsets[(topic, partition)] = start + len(rows)
        return write_landing_table(self.settings, topic, partition, start, pa.Table.from_pylist(rows, LANDING_SCHEMA))
