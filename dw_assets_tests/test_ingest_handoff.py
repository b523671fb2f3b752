"""The service's hand-over of landed rows: files read from the store and files handed over in memory (also across
the trip to an apply worker) give the same bronze input, each row tagged with its own file."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Message

from dw_assets.contracts import LANDING_SCHEMA
from dw_assets.ingest.apply_workers import rows_from_ipc, rows_to_ipc
from dw_assets.landing.envelope_rows import decode_messages
from dw_assets.landing.landing_file import encode_landing_file
from dw_assets.landing.sample_events import envelope
from dw_assets.lakehouse.landing_files import LandingFile, read_landing_files
from dw_assets.settings import Settings

TOPIC = "dw.c1.orders"


def _landed(tmp_path: Path, start: int, n: int) -> tuple[LandingFile, pa.Table]:
    msgs = [Message(topic=TOPIC, partition=0, offset=o, key=k, value=v, timestamp=(1, 1_700_000_000_000 + o))
            for o in range(start, start + n) for k, v in [envelope("c1", "orders", "u", o, ts_ms=1_760_000_000_000 + o, pos=100 + o, gtid_seq=o)]]
    batch = decode_messages(msgs).batch
    key, data, _, _ = encode_landing_file(TOPIC, 0, start, start + n - 1, [batch])
    path = tmp_path / "landing" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return LandingFile(key, TOPIC, "orders", 0, start), pq.read_table(path)


def test_handed_over_rows_read_like_stored_files_each_row_tagged_with_its_file(tmp_path: Path):
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    landed = [_landed(tmp_path, start, n) for start, n in [(0, 3), (3, 1), (4, 5), (9, 2)]]
    files = [f for f, _ in landed]
    from_store = read_landing_files(settings, files)
    # Two of the four handed over, through the worker trip (Arrow IPC): the others are read from the store.
    known = rows_from_ipc(rows_to_ipc({f.key: t for f, t in landed[1::2]}))
    mixed = read_landing_files(settings, files, known)
    assert mixed.equals(from_store)
    assert mixed.schema.remove_metadata() == LANDING_SCHEMA.append(pa.field("_dw_landing_file", pa.string())
                                                                   ).remove_metadata()
    tagged = dict(zip(mixed["kafka_offset"].to_pylist(), mixed["_dw_landing_file"].to_pylist()))
    assert tagged == {o: f.key for f, t in landed for o in t["kafka_offset"].to_pylist()}


def test_a_file_of_another_writer_is_cast_to_the_contract(tmp_path: Path):
    """A writer that omits a nullable column and widens a type still reads in the contract's schema."""
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    f, t = _landed(tmp_path, 0, 2)
    foreign = t.drop_columns(["transaction_id"]).set_column(
        t.schema.get_field_index("kafka_partition"), "kafka_partition", t["kafka_partition"].cast(pa.int64()))
    pq.write_table(foreign, tmp_path / "landing" / f.key)
    out = read_landing_files(settings, [f])
    assert out["kafka_partition"].type == pa.int32() and out["transaction_id"].null_count == 2
    assert out["kafka_offset"].to_pylist() == [0, 1]
