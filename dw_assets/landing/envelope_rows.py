"""Debezium JSON envelopes -> rows of the landing schema (contracts.LANDING_SCHEMA), as Arrow columns.

The hot path of landing: msgspec decodes each envelope against a typed struct, keeping `before`/`after` as the
raw JSON text (no parse-and-re-encode), and columns are built directly from lists and joined buffers.
Messages that are not valid envelopes come back separately, with the reason, for the dead-letter topic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_not, itemgetter
from typing import Any, Literal, Sequence

import msgspec
import numpy as np
import pyarrow as pa
from confluent_kafka import Message

from ..contracts import LANDING_SCHEMA

_NULL = msgspec.Raw(b"null")

# gc=False: these structs hold only scalars and Raw, so they can never form cycles; leaving them out of the cyclic
# GC halves decode time (100k envelopes otherwise trigger several full collections).


class _Source(msgspec.Struct, gc=False):
    ts_ms: int
    db: str
    table: str | None = None
    snapshot: str | bool | None = None  # Debezium sends a string ("true", "last", ...); very old versions a bool
    server_id: int | None = None
    gtid: str | None = None
    file: str | None = None
    pos: int | None = None
    row: int | None = None


class _Transaction(msgspec.Struct, gc=False):
    id: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    op: Literal["c", "u", "d", "r", "t"]
    source: _Source
    before: msgspec.Raw = _NULL
    after: msgspec.Raw = _NULL
    ts_ms: int | None = None
    transaction: _Transaction | None = None


class _Wrapped(msgspec.Struct, gc=False):
    """JsonConverter with schemas.enable=true puts the envelope under "payload"."""

    payload: _Envelope
    schema: msgspec.Raw = _NULL


class _WrappedKey(msgspec.Struct, gc=False):
    payload: msgspec.Raw
    schema: msgspec.Raw = _NULL


_decode_one = msgspec.json.Decoder(_Envelope).decode
_decode_wrapped = msgspec.json.Decoder(_Wrapped).decode
_decode_wrapped_key = msgspec.json.Decoder(_WrappedKey).decode

_BRACE, _N = ord("{"), ord("n")
_value, _key, _offset, _timestamp = Message.value, Message.key, Message.offset, Message.timestamp
_first, _second = itemgetter(0), itemgetter(1)


@dataclass
class BadMessage:
    """A message that cannot be landed, with why; `message` is the original confluent_kafka Message."""

    message: Any
    error: str


@dataclass
class DecodedRows:
    batch: pa.RecordBatch  # LANDING_SCHEMA
    bad: list[BadMessage] = field(default_factory=list)
    tombstones: int = 0


def decode_messages(messages: Sequence[Any]) -> DecodedRows:
    """Decode Kafka messages (confluent_kafka.Message, no errors) of ONE topic partition into landing rows.

    Tombstones (null value) are skipped and counted; anything else that is not a Debezium envelope is returned
    in `bad` and has no row.
    """
    # Per-message accessors run through map() with the unbound C methods: the loops stay in C.
    values = list(map(_value, messages))
    msgs = messages if isinstance(messages, list) else list(messages)
    tombstones = values.count(None)
    if tombstones:
        keep = list(map(is_not, values, repeat(None)))
        msgs = list(compress(msgs, keep))
        values = list(compress(values, keep))
    bad: list[BadMessage] = []
    if not msgs:
        return DecodedRows(_empty_batch(), bad, tombstones)
    try:
        # map() keeps the loop in C; any bad message raises and we redo the batch one message at a time.
        envs: list[Any] = list(map(_decode_one, values))
    except (msgspec.DecodeError, msgspec.ValidationError):
        envs = []
        keep_msgs = []
        for m, v in zip(msgs, values):
            env, err = _decode_slow(v)
            if env is None:
                bad.append(BadMessage(m, err))
            else:
                envs.append(env)
                keep_msgs.append(m)
        msgs = keep_msgs
    if not msgs:
        return DecodedRows(_empty_batch(), bad, tombstones)

    n = len(msgs)
    before = _raw_json_column([e.before for e in envs])
    after = _raw_json_column([e.after for e in envs])
    ops = [e.op for e in envs]
    problems = _consistency_problems(ops, before, after)
    keys, key_problems = _key_column(list(map(_key, msgs)))
    problems.update(key_problems)
    sources = [e.source for e in envs]
    txs = [e.transaction for e in envs]
    columns = [
        pa.array([msgs[0].topic()] * n, pa.string()),
        pa.array(np.full(n, msgs[0].partition(), dtype=np.int32)),
        pa.array(np.fromiter(map(_offset, msgs), dtype=np.int64, count=n)),
        _timestamp_column(list(map(_timestamp, msgs))),
        keys,
        pa.array(ops, pa.string()),
        before.array,
        after.array,
        pa.array([e.ts_ms for e in envs], pa.int64()),
        pa.array([s.db for s in sources], pa.string()),
        pa.array([s.table for s in sources], pa.string()),
        pa.array([s.ts_ms for s in sources], pa.int64()),
        _snapshot_column(sources),
        pa.array([s.server_id for s in sources], pa.int64()),
        pa.array([s.gtid for s in sources], pa.string()),
        pa.array([s.file for s in sources], pa.string()),
        pa.array([s.pos for s in sources], pa.int64()),
        pa.array([s.row for s in sources], pa.int32()),
        pa.array([t.id if t is not None else None for t in txs], pa.string()),
    ]
    batch = pa.RecordBatch.from_arrays(columns, schema=LANDING_SCHEMA)
    if problems:
        for i in sorted(problems):
            bad.append(BadMessage(msgs[i], problems[i]))
        mask = np.ones(n, dtype=bool)
        mask[list(problems)] = False
        batch = batch.filter(pa.array(mask))
        bad.sort(key=lambda b: b.message.offset())
    return DecodedRows(batch, bad, tombstones)


def _timestamp_column(timestamps: list[tuple[int, int]]) -> pa.Array:
    """timestamp() is (type, ms); type 0 = not available (null)."""
    types = np.fromiter(map(_first, timestamps), dtype=np.int64, count=len(timestamps))
    ms = np.fromiter(map(_second, timestamps), dtype=np.int64, count=len(timestamps))
    missing = types == 0
    return pa.array(ms, mask=missing if missing.any() else None)


def _empty_batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=LANDING_SCHEMA)


def _decode_slow(value: bytes) -> tuple[Any, str]:
    """One message: the envelope, or None and the reason it is not one."""
    try:
        return _decode_one(value), ""
    except msgspec.ValidationError as e:
        first = f"not a Debezium envelope: {e}"
    except msgspec.DecodeError as e:
        return None, f"invalid JSON: {e}"
    try:
        return _decode_wrapped(value).payload, ""
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, first


@dataclass
class _RawColumn:
    array: pa.Array  # string, null where the JSON value was null
    first: np.ndarray  # first byte of each raw value
    is_null: np.ndarray


def _raw_json_column(raws: list[Any]) -> _RawColumn:
    """before/after (msgspec.Raw) as JSON text, built from one joined buffer (pa.array does not take Raw)."""
    n = len(raws)
    lens = np.fromiter(map(len, raws), dtype=np.int64, count=n)
    data = np.frombuffer(b"".join(raws), dtype=np.uint8)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    first = data[offsets[:-1]] if data.size else np.zeros(n, dtype=np.uint8)
    # A JSON value of 4 bytes starting with 'n' can only be `null`.
    is_null = (lens == 4) & (first == _N)
    validity = pa.py_buffer(np.packbits(~is_null, bitorder="little"))
    arr = pa.Array.from_buffers(pa.large_string(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)],
                                null_count=int(is_null.sum()))
    return _RawColumn(arr.cast(pa.string()), first, is_null)


def _consistency_problems(ops: list[str], before: _RawColumn, after: _RawColumn) -> dict[int, str]:
    """Rows whose op does not match before/after (e.g. a create without `after`), by index."""
    op = np.array(ops)
    before_obj, after_obj = before.first == _BRACE, after.first == _BRACE
    ok_shape = (before_obj | before.is_null) & (after_obj | after.is_null)
    needs_after = (op == "c") | (op == "r") | (op == "u")
    needs_before = op == "d"
    bad = ~ok_shape | (needs_after & ~after_obj) | (needs_before & ~before_obj)
    problems: dict[int, str] = {}
    for i in np.flatnonzero(bad):
        if not ok_shape[i]:
            problems[int(i)] = "before/after must be JSON objects or null"
        elif needs_after[i]:
            problems[int(i)] = f"op {ops[i]!r} without an `after` object"
        else:
            problems[int(i)] = f"op {ops[i]!r} without a `before` object"
    return problems


def _key_column(keys: list[bytes | None]) -> tuple[pa.Array, dict[int, str]]:
    try:
        arr = pa.array(keys, pa.binary()).cast(pa.string())
        first = next((k for k in keys if k is not None), None)
        if first is None or not (first[:1] == b"{" and b'"payload"' in first):
            return arr, {}
    except pa.ArrowInvalid:
        pass
    # Rare path: keys that are not UTF-8, or keys wrapped by a schemas.enable JsonConverter.
    out: list[str | None] = []
    problems: dict[int, str] = {}
    for i, k in enumerate(keys):
        if k is None:
            out.append(None)
            continue
        try:
            text = k.decode("utf-8")
        except UnicodeDecodeError:
            problems[i] = "key is not UTF-8 text"
            out.append(None)
            continue
        try:
            text = bytes(_decode_wrapped_key(k).payload).decode()
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass
        out.append(text)
    return pa.array(out, pa.string()), problems


def _snapshot_column(sources: list[Any]) -> pa.Array:
    values = [s.snapshot for s in sources]
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([str(v).lower() if isinstance(v, bool) else v for v in values], pa.string())
