"""One landing file: Parquet bytes of LANDING_SCHEMA rows plus the offsets it covers, in footer and object metadata.

The offsets in the metadata let a restarted writer adopt a file it uploaded but never committed, instead of
guessing where that file ended; the topic id and the first message's fingerprint say which incarnation of the
topic the file came from, so that a file of a lost log is never adopted (see `incarnation`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ..contracts import LANDING_SCHEMA, landing_object_key

WRITER_ID = "dw-landing/1"
# Confluent's S3 sink defaults to snappy; zstd level 1 costs about the same CPU and gives files ~30% smaller.
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 1
# Dictionary-encode only the low-cardinality columns: trying it on the JSON text columns more than doubles the
# write time for nothing.
DICTIONARY_COLUMNS = ["kafka_topic", "op", "source_db", "source_table", "source_snapshot", "source_file"]


@dataclass(frozen=True)
class LandedFile:
    key: str
    topic: str
    partition: int
    start_offset: int  # first offset covered (the object's name)
    end_offset: int  # last offset covered, inclusive; the landing group commits end_offset + 1
    records: int  # rows in the file (tombstones and dead letters have none)
    bytes: int

    def as_dict(self) -> dict:
        return asdict(self)


def file_metadata(topic: str, partition: int, start: int, end: int, records: int,
                  topic_id: str | None = None, first: str | None = None) -> dict[str, str]:
    # Lower-case, dash-separated keys: valid S3 user metadata as they are.
    incarnation = {"dw-topic-id": topic_id} if topic_id else {}
    if first:
        incarnation["dw-first-message"] = first
    return {**incarnation,
        "dw-writer": WRITER_ID,
        "dw-topic": topic,
        "dw-partition": str(partition),
        "dw-start-offset": str(start),
        "dw-end-offset": str(end),
        "dw-records": str(records),
    }


def encode_landing_file(topic: str, partition: int, start: int, end: int, batches: list[pa.RecordBatch],
                        topic_id: str | None = None, first: str | None = None,
                        ) -> tuple[str, bytes, dict[str, str], int]:
    """(object key, Parquet bytes, metadata, row count) for rows covering offsets [start, end] of a partition;
    `topic_id` and `first` (the fingerprint of the message at `start`) identify the topic's incarnation."""
    table = pa.Table.from_batches(batches, schema=LANDING_SCHEMA)
    meta = file_metadata(topic, partition, start, end, table.num_rows, topic_id, first)
    table = table.replace_schema_metadata({**(LANDING_SCHEMA.metadata or {}), **meta})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION, compression_level=COMPRESSION_LEVEL,
                   use_dictionary=DICTIONARY_COLUMNS, row_group_size=max(table.num_rows, 1))
    return landing_object_key(topic, partition, start), sink.getvalue().to_pybytes(), meta, table.num_rows


def end_offset_of(metadata: dict[str, str] | None) -> int | None:
    """The last offset a landed object covers, if it was written by this writer."""
    if not metadata or "dw-end-offset" not in metadata:
        return None
    try:
        return int(metadata["dw-end-offset"])
    except ValueError:
        return None
