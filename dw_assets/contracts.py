"""The contracts between stages: topic names, consumer groups and the landing file layout.

Kept in one module so that capture, landing, lakehouse and checks agree by construction. The README's
"Contracts" section documents the same thing for other tools (Debezium, Confluent's S3 sink, Spark).
"""
from __future__ import annotations

import pyarrow as pa

# ---- Kafka ------------------------------------------------------------------------------------------------


def data_topic(prefix: str, database: str, table: str) -> str:
    """Debezium's topic name: <topic.prefix>.<database>.<table>."""
    return f"{prefix}.{database}.{table}"


def schema_change_topic(prefix: str) -> str:
    """Debezium publishes DDL on a topic named after the prefix itself (include.schema.changes)."""
    return prefix


def heartbeat_topic(prefix: str) -> str:
    return f"__dw-heartbeat.{prefix}"


def offsets_topic(prefix: str) -> str:
    """Compacted topic holding the capture service's checkpoint (binlog file/pos/GTID)."""
    return f"__dw-offsets.{prefix}"


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def landing_group(client: str) -> str:
    return f"dw-landing.{client}"


def client_topic_prefix(prefix: str, database: str) -> str:
    """All data topics of one client database start with this."""
    return f"{prefix}.{database}."


# ---- Landing files (Confluent S3 sink layout) ----------------------------------------------------------------


def landing_object_key(topic: str, partition: int, start_offset: int, ext: str = "parquet") -> str:
    """topics/<topic>/partition=<p>/<topic>+<p>+<startOffset, 10 digits>.<ext> (Confluent S3 sink naming)."""
    return f"topics/{topic}/partition={partition}/{topic}+{partition}+{start_offset:010d}.{ext}"


# One row per change event. before/after/key are JSON text: schema-agnostic, so a landing file never needs
# rewriting when a source table evolves; the lakehouse parses them with the model's types.
LANDING_SCHEMA = pa.schema(
    [
        pa.field("kafka_topic", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("kafka_timestamp_ms", pa.int64()),
        pa.field("key", pa.string()),
        pa.field("op", pa.string(), nullable=False),  # c u d r t
        pa.field("before", pa.string()),
        pa.field("after", pa.string()),
        pa.field("ts_ms", pa.int64()),
        pa.field("source_db", pa.string()),
        pa.field("source_table", pa.string()),
        pa.field("source_ts_ms", pa.int64()),
        pa.field("source_snapshot", pa.string()),
        pa.field("source_server_id", pa.int64()),
        pa.field("source_gtid", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_pos", pa.int64()),
        pa.field("source_row", pa.int32()),
        pa.field("transaction_id", pa.string()),
    ]
)
