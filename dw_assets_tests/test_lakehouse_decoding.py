"""Debezium's encodings land in silver with the right values: every column type a model can have, every
`time.precision.mode` / `decimal.handling.mode`, the examples of Debezium's own documentation, the project's own
encoding, and values that do not decode reported per row (not raised)."""
from __future__ import annotations

import base64
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from dw_assets.lakehouse import changes
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.decoding import Encoding
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.landing.envelope_rows import decode_messages
from dw_assets.model import arrow_type, load_model, parse_type
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.debezium_encoding import Modes, encode, lake_value, sample_values, unscaled_bytes

# Every type the model format supports (model/types.py), with the precisions that change an encoding.
ALL_TYPES = {
    "c_tinyint": "TINYINT", "c_tinyint_u": "TINYINT UNSIGNED", "c_bool": "BOOLEAN", "c_smallint": "SMALLINT",
    "c_smallint_u": "SMALLINT UNSIGNED", "c_mediumint": "MEDIUMINT", "c_mediumint_u": "MEDIUMINT UNSIGNED",
    "c_int": "INT", "c_int_u": "INT UNSIGNED", "c_bigint": "BIGINT", "c_bigint_u": "BIGINT UNSIGNED",
    "c_dec_10_2": "DECIMAL(10,2)", "c_dec_38_10": "DECIMAL(38,10)", "c_dec_18_0": "DECIMAL(18,0)",
    "c_dec_5_5": "DECIMAL(5,5)", "c_float": "FLOAT", "c_double": "DOUBLE",
    "c_date": "DATE", "c_dt0": "DATETIME", "c_dt3": "DATETIME(3)", "c_dt4": "DATETIME(4)", "c_dt6": "DATETIME(6)",
    "c_ts0": "TIMESTAMP", "c_ts6": "TIMESTAMP(6)", "c_time0": "TIME", "c_time3": "TIME(3)", "c_time6": "TIME(6)",
    "c_year": "YEAR", "c_char": "CHAR(10)", "c_varchar": "VARCHAR(50)", "c_tinytext": "TINYTEXT", "c_text": "TEXT",
    "c_mediumtext": "MEDIUMTEXT", "c_longtext": "LONGTEXT", "c_binary": "BINARY(1)", "c_varbinary": "VARBINARY(300)",
    "c_tinyblob": "TINYBLOB", "c_blob": "BLOB", "c_mediumblob": "MEDIUMBLOB", "c_longblob": "LONGBLOB",
    "c_bit1": "BIT(1)", "c_bit10": "BIT(10)", "c_bit64": "BIT(64)", "c_enum": "ENUM('a','b''c','d')",
    "c_set": "SET('x','y','z')", "c_json": "JSON", "c_uuid": "UUID",
}
SPECS = {name: parse_type(t) for name, t in ALL_TYPES.items()}
MODES = [Modes(t, d) for t, d in [("adaptive_time_microseconds", "precise"), ("adaptive", "string"),
                                  ("connect", "double"), ("isostring", "precise")]]


def all_types_model(tmp_path: Path):
    cols = [{"name": "id", "type": "BIGINT", "primary_key": True}] + [
        {"name": n, "type": t, "nullable": True} for n, t in ALL_TYPES.items()]
    p = tmp_path / "all_types.yaml"
    p.write_text(json.dumps({"version": "test-all", "tables": [{"name": "all_types", "columns": cols}]}))
    return load_model(p)


def _expected(name: str, value, modes: Modes):
    spec = SPECS[name]
    out = lake_value(spec, value)
    lossy_time = modes.time == "connect" and (spec.fsp or 0) > 3
    if lossy_time and spec.base == "datetime":
        out = out.replace(microsecond=out.microsecond // 1000 * 1000)
    if lossy_time and spec.base == "time":
        out = out // 1000 * 1000
    return out


@pytest.mark.parametrize("modes", MODES, ids=lambda m: m.id)
def test_every_type_debezium_encoded_lands_in_silver(tmp_path: Path, modes: Modes):
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    model = all_types_model(tmp_path)
    client = unique_client("dz")
    feed = LandingFeed(settings, client, {"all_types": ["id"]})
    source = {i: {n: sample_values(SPECS[n], i) for n in ALL_TYPES} for i in range(3)}
    if modes.decimal == "double":  # a double carries ~15 digits: Debezium's own loss, so keep decimals short
        source[0].update({n: Decimal(-1).scaleb(-(s.scale or 0)) for n, s in SPECS.items() if s.base == "decimal"})
    rows = [("c", {"id": i, **{n: encode(SPECS[n], v, modes) for n, v in vals.items()}}) for i, vals in source.items()]
    rows.append(("c", {"id": 3, **{n: None for n in ALL_TYPES}}))
    feed.write("all_types", feed.events("all_types", rows))
    time_mode = "adaptive_time_microseconds" if modes.time == "isostring" else modes.time
    settings = _with_encoding(settings, time_mode, "precise" if modes.decimal == "precise" else "string")
    r = apply_client(settings, client, model, source_schema=StaticSourceSchema({}))
    assert r.ok, r.failed
    silver = {row["id"]: row for row in read_delta(settings, "silver", client, "all_types").to_pylist()}
    assert {n: silver[3][n] for n in ALL_TYPES} == {n: None for n in ALL_TYPES}
    wrong = {}
    for i, vals in source.items():
        for n, v in vals.items():
            exp = _expected(n, v, modes)
            if silver[i][n] != exp:
                wrong[(i, n)] = (silver[i][n], exp, encode(SPECS[n], v, modes))
    assert not wrong


def _with_encoding(settings: Settings, time_mode: str, decimal_mode: str) -> Settings:
    from dataclasses import replace
    return replace(settings, cdc_time_precision_mode=time_mode, cdc_decimal_handling_mode=decimal_mode)


def _decode(rows: list[dict], types: dict[str, str], enc: Encoding | None = None) -> changes.DecodedEvents:
    specs = {n: parse_type(t) for n, t in types.items()}
    fields = [pa.field(n, arrow_type(s)) for n, s in specs.items()]
    events = pa.table({"op": ["c"] * len(rows), "after": [json.dumps(r) for r in rows], "before": [None] * len(rows),
                       "_dw_seq": pa.array(range(len(rows)), pa.int64()),
                       "_dw_seq_row": pa.array([0] * len(rows), pa.int64()), "source_ts_ms": [0] * len(rows)})
    return changes.decode_events(changes.connect(), events, fields, specs, enc)


def test_debezium_documentation_examples():
    # MariaDB/MySQL connector docs, "Temporal values without time zones": DATETIME 2018-06-20 06:37:03 becomes
    # 1529476623000; TIMESTAMP 2018-06-20 06:37:03 (America/Los_Angeles) becomes "2018-06-20T13:37:03Z".
    # Data change events example (customers): {"id": 1004, "first_name": "Anne", ...}.
    out = _decode([{"dt": 1529476623000, "ts": "2018-06-20T13:37:03Z", "id": 1004, "first_name": "Anne",
                    "email": "annek@noanswer.org"}],
                  {"dt": "DATETIME", "ts": "TIMESTAMP", "id": "INT", "first_name": "VARCHAR(255)",
                   "email": "VARCHAR(255)"})
    (row,) = out.typed.to_pylist()
    assert row["dt"] == datetime(2018, 6, 20, 6, 37, 3)
    assert row["ts"] == datetime(2018, 6, 20, 13, 37, 3, tzinfo=timezone.utc)
    assert (row["id"], row["first_name"], row["email"]) == (1004, "Anne", "annek@noanswer.org")


def test_issue_values_and_variable_scale_decimal():
    # The values of issue #14 that the CAST refused, and the {"scale", "value"} form of a variable-scale decimal.
    value = base64.b64encode(unscaled_bytes(-123456)).decode()
    out = _decode([{"dt": 1735787045123456, "d": "2024-01-01Z", "dec": {"scale": 3, "value": value},
                    "dec2": "-0.50", "t": "-838:59:59.000000"}],
                  {"dt": "DATETIME(6)", "d": "DATE", "dec": "DECIMAL(10,3)", "dec2": "DECIMAL(4,2)", "t": "TIME"})
    assert not out.failed.num_rows
    (row,) = out.typed.to_pylist()
    assert row["dt"] == datetime(2025, 1, 2, 3, 4, 5, 123456) and row["d"] == date(2024, 1, 1)
    assert row["dec"] == Decimal("-123.456") and row["dec2"] == Decimal("-0.50")
    assert row["t"] == -(838 * 3600 + 59 * 60 + 59) * 1_000_000


def test_ambiguous_scale0_decimal_follows_decimal_handling_mode():
    # "1234" is both valid base64 (bytes d7 6d f8) and a number: the connector's setting decides.
    types = {"n": "DECIMAL(10,0)"}
    assert _decode([{"n": "1234"}], types).typed["n"].to_pylist() == [Decimal(1234)]
    precise = _decode([{"n": "1234"}], types, Encoding(decimal_handling_mode="precise"))
    assert precise.typed["n"].to_pylist() == [Decimal(int.from_bytes(b"\xd7\x6d\xf8", "big", signed=True))]
    # Unambiguous forms decode alike under both settings: a negative, digits of no base64 length, base64 with
    # padding or letters.
    for enc in (Encoding(), Encoding(decimal_handling_mode="precise")):
        assert _decode([{"n": "-7"}, {"n": "12345"}, {"n": "AQ=="}, {"n": "ZA=="}], types, enc).typed["n"].to_pylist() \
            == [Decimal(-7), Decimal(12345), Decimal(1), Decimal(100)]


def test_values_that_do_not_decode_are_reported_per_row():
    out = _decode([{"d": "2024-01-01"}, {"d": "not a date"}, {"d": None}, {"d": "2024-02-30"}], {"d": "DATE"})
    assert out.typed["d"].to_pylist() == [date(2024, 1, 1), None]
    assert out.failed["row"].to_pylist() == [1, 3]
    assert "column d: cannot decode not a date as DATE" in out.failed["error"][0].as_py()
    with pytest.raises(changes.ChangeParseError, match="column d"):
        changes.typed_events(changes.connect(), pa.table({
            "op": ["c"], "after": ['{"d": "x"}'], "before": [None], "_dw_seq": pa.array([1], pa.int64()),
            "_dw_seq_row": pa.array([0], pa.int64()), "source_ts_ms": [0]}), [pa.field("d", pa.date32())], {"d": parse_type("DATE")})


def test_project_encoding_still_decodes():
    # dw_assets/cdc/README.md: ISO strings, DECIMAL as string with its scale, TIME as text, BIT base64.
    out = _decode([{"dt": "2024-01-01T00:00:00.123456", "ts": "2024-06-01T12:00:00.000001Z", "d": "2024-03-01",
                    "t": "-00:00:01.250000", "dec": "-12345678.91", "b1": True, "b10": "gQI=", "blob": "AP8Q"}],
                  {"dt": "DATETIME(6)", "ts": "TIMESTAMP(6)", "d": "DATE", "t": "TIME(6)", "dec": "DECIMAL(10,2)",
                   "b1": "BIT(1)", "b10": "BIT(10)", "blob": "BLOB"})
    (row,) = out.typed.to_pylist()
    assert row == {"dt": datetime(2024, 1, 1, 0, 0, 0, 123456),
                   "ts": datetime(2024, 6, 1, 12, 0, 0, 1, tzinfo=timezone.utc), "d": date(2024, 3, 1),
                   "t": -1_250_000, "dec": Decimal("-12345678.91"), "b1": "1", "b10": "1010000001",
                   "blob": b"\x00\xff\x10", "_dw_op": "c", "_dw_seq": 0, "_dw_seq_row": 0,
                   "_dw_source_ts_ms": 0}


def test_landing_accepts_schema_payload_form_and_ts_us_ns():
    from confluent_kafka import Message
    payload = {"before": None, "after": {"id": 1004, "first_name": "Anne"}, "op": "c", "ts_ms": 1465581029523,
               "ts_us": 1465581029523468, "ts_ns": 1465581029523468471,
               "source": {"version": "2.7.0.Final", "connector": "mariadb", "name": "mariadb-server-1",
                          "ts_ms": 1465581029100, "ts_us": 1465581029100000, "ts_ns": 1465581029100000000,
                          "snapshot": False, "db": "inventory", "table": "customers", "server_id": 223344,
                          "gtid": None, "file": "mariadb-bin.000003", "pos": 484, "row": 0, "thread": 7,
                          "query": None}}
    wrapped = {"schema": {"type": "struct", "fields": [], "optional": False}, "payload": payload}
    key = json.dumps({"schema": {"type": "struct"}, "payload": {"id": 1004}}).encode()
    msgs = [Message(topic="dw.inventory.customers", partition=0, offset=o, key=key, value=json.dumps(v).encode(),
                    timestamp=(1, 1)) for o, v in enumerate([wrapped, payload])]
    rows = decode_messages(msgs)
    assert not rows.bad
    got = rows.batch.to_pylist()
    assert [json.loads(r["after"]) for r in got] == [payload["after"]] * 2
    assert [(json.loads(r["key"]), r["ts_ms"], r["source_ts_ms"], r["source_pos"], r["source_snapshot"])
            for r in got] == [({"id": 1004}, 1465581029523, 1465581029100, 484, "false")] * 2


def test_time_modes_decide_integer_time_and_datetime():
    types = {"t3": "TIME(3)", "t6": "TIME(6)", "dt6": "DATETIME(6)"}
    row = [{"t3": 1500, "t6": 1500, "dt6": 1500}]
    micros = _decode(row, types).typed.to_pylist()[0]
    adaptive = _decode(row, types, Encoding(time_precision_mode="adaptive")).typed.to_pylist()[0]
    connect = _decode(row, types, Encoding(time_precision_mode="connect")).typed.to_pylist()[0]
    assert (micros["t3"], micros["t6"], micros["dt6"]) == (1500, 1500, datetime(1970, 1, 1, 0, 0, 0, 1500))
    assert (adaptive["t3"], adaptive["t6"]) == (1_500_000, 1500)
    assert (connect["t3"], connect["t6"], connect["dt6"]) == (1_500_000, 1_500_000,
                                                              datetime(1970, 1, 1) + timedelta(milliseconds=1500))


def test_iso_datetime_with_offset_is_converted_to_utc():
    out = _decode([{"dt": "2024-01-02T03:04:05+02:00", "ts": "2024-01-02T03:04:05.5-01:30"}],
                  {"dt": "DATETIME", "ts": "TIMESTAMP(1)"})
    (row,) = out.typed.to_pylist()
    assert row["dt"] == datetime(2024, 1, 2, 1, 4, 5)
    assert row["ts"] == datetime(2024, 1, 2, 4, 34, 5, 500000, tzinfo=timezone.utc)


def test_decimal_wider_than_delta_is_text_and_base64_decodes_or_fails():
    types = {"w": "DECIMAL(65,30)"}
    small = base64.b64encode(unscaled_bytes(-12345)).decode()
    huge = base64.b64encode(unscaled_bytes(10**64 - 1)).decode()  # 27 bytes: beyond what the SQL path decodes
    out = _decode([{"w": "12345678901234567890123456789012345.123456789012345678901234567890"}, {"w": small},
                   {"w": huge}], types, Encoding(decimal_handling_mode="precise"))
    assert out.typed["w"].to_pylist() == ["12345678901234567890123456789012345.123456789012345678901234567890",
                                          "-0.000000000000000000000000012345"]
    assert out.failed["row"].to_pylist() == [2]  # an error, never the base64 text as a number


def test_encoding_settings_are_validated_naming_the_variable(tmp_path):
    from dw_assets.settings import SettingsError, load_settings

    s = load_settings(home=tmp_path, env={"DW_CDC_TIME_PRECISION_MODE": "connect", "DW_CDC_DECIMAL_HANDLING_MODE": "precise"})
    assert (s.cdc_time_precision_mode, s.cdc_decimal_handling_mode) == ("connect", "precise")
    with pytest.raises(SettingsError, match="DW_CDC_TIME_PRECISION_MODE='micro'"):
        load_settings(home=tmp_path, env={"DW_CDC_TIME_PRECISION_MODE": "micro"})


def test_schema_payload_messages_of_every_type_land_in_silver(tmp_path: Path):
    """JsonConverter with schemas.enable=true: the envelope under "payload", through landing into silver."""
    from confluent_kafka import Message

    from dw_assets.contracts import data_topic
    from dw_assets.lakehouse.synthetic import write_landing_table

    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    settings = _with_encoding(settings, "adaptive_time_microseconds", "precise")
    model, client, modes = all_types_model(tmp_path), unique_client("dz"), Modes()
    topic = data_topic(settings.kafka.topic_prefix, client, "all_types")
    source = {i: {n: sample_values(SPECS[n], i) for n in ALL_TYPES} for i in range(3)}
    msgs = []
    for i, vals in source.items():
        after = {"id": i, **{n: encode(SPECS[n], v, modes) for n, v in vals.items()}}
        payload = {"before": None, "after": after, "op": "c", "ts_ms": 1, "ts_us": 1000, "ts_ns": 1000000,
                   "source": {"version": "3.0.0.Final", "connector": "mariadb", "name": "dw", "ts_ms": 1,
                              "ts_us": 1000, "ts_ns": 1000000, "snapshot": "false", "db": client,
                              "table": "all_types", "server_id": 1, "gtid": None, "file": "mariadb-bin.000001",
                              "pos": 100 * (i + 1), "row": 0, "thread": None, "query": None}}
        schema = {"type": "struct", "optional": False, "name": f"dw.{client}.all_types.Envelope", "fields": [
            {"type": "struct", "optional": True, "field": "after", "fields": [
                {"type": "int64", "optional": True, "name": "io.debezium.time.MicroTimestamp", "version": 1,
                 "field": "c_dt6"},
                {"type": "bytes", "optional": True, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                 "parameters": {"scale": "2", "connect.decimal.precision": "10"}, "field": "c_dec_10_2"}]}]}
        key = {"schema": {"type": "struct", "fields": [{"type": "int64", "field": "id"}]}, "payload": {"id": i}}
        msgs.append(Message(topic=topic, partition=0, offset=i, key=json.dumps(key).encode(),
                            value=json.dumps({"schema": schema, "payload": payload}).encode(), timestamp=(1, 1)))
    rows = decode_messages(msgs)
    assert not rows.bad
    write_landing_table(settings, topic, 0, 0, pa.Table.from_batches([rows.batch]))
    r = apply_client(settings, client, model, source_schema=StaticSourceSchema({}))
    assert r.ok, r.failed
    silver = {row["id"]: row for row in read_delta(settings, "silver", client, "all_types").to_pylist()}
    assert {(i, n): silver[i][n] for i in source for n in ALL_TYPES} == {
        (i, n): _expected(n, v, modes) for i, vals in source.items() for n, v in vals.items()}


def test_debezium_geometry_struct_decodes_to_wkb_and_srid():
    # io.debezium.data.geometry.Geometry: {"wkb": base64, "srid": int or null}; URL-safe base64 accepted too.
    from dw_assets.model.geometry import point_wkb, wkt

    wkb = point_wkb(13.4, 52.52)
    std, url = base64.b64encode(wkb).decode(), base64.urlsafe_b64encode(b"\xfb" + wkb[1:]).decode()
    out = _decode([{"g": {"wkb": std, "srid": 4326}}, {"g": {"wkb": std, "srid": None}}, {"g": None},
                   {"g": {"wkb": "not base64!", "srid": 1}}, {"g": {"wkb": url}}], {"g": "POINT"})
    assert out.typed["g"].to_pylist() == [{"wkb": wkb, "srid": 4326}, {"wkb": wkb, "srid": None}, None,
                                          {"wkb": b"\xfb" + wkb[1:], "srid": None}]
    assert wkt(out.typed["g"][0].as_py()) == "POINT(13.4 52.52)"
    assert out.failed["row"].to_pylist() == [3]
    assert "column g: cannot decode" in out.failed["error"][0].as_py()
