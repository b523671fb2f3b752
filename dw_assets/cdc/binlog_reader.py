"""The binlog connection: mysql-replication 1.0.17's stream reader with its MariaDB defects fixed.

Capture reads raw events through `PatchedBinLogStreamReader.raw_events()` (the hot path decodes rows itself,
see `row_decoder`); the library's own `fetchone()` stays usable, with the same fixes, for tests and the bench.
Defects fixed here (field notes): (a) the MariaDB GTID dump request declared 14 payload bytes but sent 15;
(b) `is_mariadb=True` ignored an explicit log_file/log_pos; (c) negative TIME with fractional seconds decoded
wrongly; (d) the silent reconnect from the original position, replaced by `StreamDisconnected`.
"""
from __future__ import annotations

import datetime
import struct
from dataclasses import dataclass
from typing import Any, Iterator

import pymysql
import pymysql.cursors
from pymysql.constants.COMMAND import COM_BINLOG_DUMP
from pymysqlreplication import BinLogStreamReader, binlogstream
from pymysqlreplication import row_event as lib_rows
from pymysqlreplication.constants import BINLOG
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import TableMapEvent

# Event types the capture loop handles (MariaDB numbering where it differs from MySQL).
QUERY = BINLOG.QUERY_EVENT
STOP = BINLOG.STOP_EVENT
ROTATE = BINLOG.ROTATE_EVENT
FORMAT_DESCRIPTION = BINLOG.FORMAT_DESCRIPTION_EVENT
XID = BINLOG.XID_EVENT
TABLE_MAP = BINLOG.TABLE_MAP_EVENT
HEARTBEAT = BINLOG.HEARTBEAT_LOG_EVENT
MARIADB_GTID = BINLOG.MARIADB_GTID_EVENT
WRITE_ROWS = frozenset({BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2})
UPDATE_ROWS = frozenset({BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2})
DELETE_ROWS = frozenset({BINLOG.DELETE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V2})
ROWS_EVENTS = WRITE_ROWS | UPDATE_ROWS | DELETE_ROWS
# MariaDB's compressed events (log_bin_compress=ON): the library maps them to NotImplementedEvent and drops them
# silently; capture refuses them instead of losing changes.
MARIADB_COMPRESSED = frozenset(range(0xA5, 0xAC))

_HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, next position, flags


class StreamDisconnected(ConnectionError):
    """The binlog connection dropped; the service reconnects from its own checkpoint, never the library."""


@dataclass(slots=True)
class RawEvent:
    """One binlog event as read from the wire: header fields plus the body bytes (checksum stripped)."""

    type: int
    timestamp: int
    server_id: int
    next_pos: int  # MariaDB's log_pos: the END of this event in the current file
    size: int
    data: bytes  # the whole packet, OK byte included
    body_start: int
    body_end: int
    packet: Any  # the pymysql packet, for events the library parses (table maps)


# ---- (c) negative TIME with fractional seconds ---------------------------------------------------------------


def decode_time2(data: bytes, fsp: int) -> datetime.timedelta:
    """MariaDB/MySQL TIME2: 3 bytes of sign+hh:mm:ss and 0-3 bytes of fraction, one big-endian offset number.

    The server stores the whole value (integer part and fraction together) as one offset binary number, so a
    negative value must be read as a unit; the library negated the fraction separately (-1.250 s -> -0.75 s).
    """
    frac_bytes = (fsp + 1) // 2
    raw = int.from_bytes(data[: 3 + frac_bytes], "big") - (0x800000 << (8 * frac_bytes))
    negative = raw < 0
    mag = -raw if negative else raw
    hms = mag >> (8 * frac_bytes)
    frac = mag & ((1 << (8 * frac_bytes)) - 1)
    micro = frac * (10 ** (6 - 2 * frac_bytes)) if frac_bytes else 0
    td = datetime.timedelta(hours=(hms >> 12) & 0x3FF, minutes=(hms >> 6) & 0x3F, seconds=hms & 0x3F, microseconds=micro)
    return -td if negative else td


class _FixedTime2Mixin:
    """Row events whose TIME2 decoding uses `decode_time2` (the library's path used by tests and the bench)."""

    def _RowsEvent__read_time2(self, column):  # noqa: N802 - overrides the library's name-mangled method
        fsp_bytes = (column.fsp + 1) // 2
        return decode_time2(self.packet.read(3 + fsp_bytes), column.fsp)


class FixedWriteRowsEvent(_FixedTime2Mixin, lib_rows.WriteRowsEvent):
    pass


class FixedUpdateRowsEvent(_FixedTime2Mixin, lib_rows.UpdateRowsEvent):
    pass


class FixedDeleteRowsEvent(_FixedTime2Mixin, lib_rows.DeleteRowsEvent):
    pass


class _FixedPacketWrapper(BinLogPacketWrapper):
    """The library's packet wrapper with the fixed row event classes in its event map."""

    _BinLogPacketWrapper__event_map = {
        **BinLogPacketWrapper._BinLogPacketWrapper__event_map,  # type: ignore[attr-defined]
        BINLOG.WRITE_ROWS_EVENT_V1: FixedWriteRowsEvent,
        BINLOG.WRITE_ROWS_EVENT_V2: FixedWriteRowsEvent,
        BINLOG.UPDATE_ROWS_EVENT_V1: FixedUpdateRowsEvent,
        BINLOG.UPDATE_ROWS_EVENT_V2: FixedUpdateRowsEvent,
        BINLOG.DELETE_ROWS_EVENT_V1: FixedDeleteRowsEvent,
        BINLOG.DELETE_ROWS_EVENT_V2: FixedDeleteRowsEvent,
    }


# The library's fetchone() builds row events from the row classes it was told to allow; map ours onto its.
_FIXED_FOR = {
    lib_rows.WriteRowsEvent: FixedWriteRowsEvent,
    lib_rows.UpdateRowsEvent: FixedUpdateRowsEvent,
    lib_rows.DeleteRowsEvent: FixedDeleteRowsEvent,
}


# ---- the reader ------------------------------------------------------------------------------------------------


class PatchedBinLogStreamReader(BinLogStreamReader):
    """`BinLogStreamReader` for MariaDB with defects (a), (b) and (d) fixed in the dump request and connect.

    Connects once: any later connect attempt (the library's silent reconnect after error 2013/2006) raises
    `StreamDisconnected`, so that resume always goes through the capture service's checkpoint.
    """

    def __init__(self, connection_settings: dict[str, Any], server_id: int, **kw: Any) -> None:
        only_events = kw.pop("only_events", None)
        if only_events is not None:
            only_events = [_FIXED_FOR.get(e, e) for e in only_events]
        super().__init__(connection_settings, server_id, only_events=only_events, **kw)
        if only_events is None:
            # The default allowed set names the library's row classes; allow the fixed ones instead.
            allowed = set(self._BinLogStreamReader__allowed_events)  # type: ignore[attr-defined]
            allowed = {_FIXED_FOR.get(e, e) for e in allowed}
            self._BinLogStreamReader__allowed_events = frozenset(allowed)
            self._BinLogStreamReader__allowed_events_in_packet = frozenset(  # type: ignore[attr-defined]
                {binlogstream.FormatDescriptionEvent, TableMapEvent, binlogstream.RotateEvent} | allowed
            )
        self._dw_connects = 0

    def _BinLogStreamReader__connect_to_ctl(self) -> None:  # noqa: N802 - overrides a name-mangled method
        # The library passes the deprecated `db=` keyword to PyMySQL; same connection, current spelling.
        base = self._ctl_connection_settings or self._BinLogStreamReader__connection_settings  # type: ignore[attr-defined]
        conf = dict(base)
        conf.pop("db", None)
        conf.update(database="information_schema", cursorclass=pymysql.cursors.DictCursor, autocommit=True)
        self._ctl_connection = self.pymysql_wrapper(**conf)
        self._ctl_connection._get_dbms = self._BinLogStreamReader__get_dbms  # type: ignore[attr-defined]
        self._BinLogStreamReader__connected_ctl = True
        self._BinLogStreamReader__check_optional_meta_data()  # type: ignore[attr-defined]

    # -- (d): no silent reconnect ---------------------------------------------------------------------------
    def _BinLogStreamReader__connect_to_stream(self) -> None:  # noqa: N802 - overrides a name-mangled method
        if self._dw_connects:
            raise StreamDisconnected(
                f"binlog connection lost at {self.log_file}:{self.log_pos}; not reconnecting inside the reader"
            )
        self._dw_connects += 1
        self._connect_to_stream_fixed()

    # -- (a) and (b): a well-formed dump request honouring file/pos ---------------------------------------------
    def _connect_to_stream_fixed(self) -> None:
        settings = self._BinLogStreamReader__connection_settings  # type: ignore[attr-defined]
        conn = self.pymysql_wrapper(**settings)
        self._stream_connection = conn
        use_checksum = self._BinLogStreamReader__checksum_enabled()  # type: ignore[attr-defined]
        self._BinLogStreamReader__use_checksum = use_checksum
        with conn.cursor() as cur:
            if use_checksum:
                cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            if self.slave_heartbeat:
                # Nanoseconds; the server sends a heartbeat event after this much idle time, which is what
                # wakes the capture loop for heartbeats, stats and registry polls while the binlog is quiet.
                cur.execute("SET @master_heartbeat_period = %s", (int(float(self.slave_heartbeat) * 1e9),))
            # Capability 4: the server sends MariaDB GTID events (transaction starts) instead of dummies.
            cur.execute("SET @mariadb_slave_capability = 4")
            if self.auto_position is not None:
                cur.execute("SET @slave_connect_state = %s", (self.auto_position,))
                cur.execute("SET @slave_gtid_strict_mode = 1")
                cur.execute("SET @slave_gtid_ignore_duplicates = 0")
        self._register_slave()
        conn._write_bytes(self.dump_request())
        conn._next_seq_id = 1
        self._BinLogStreamReader__connected_stream = True

    def dump_request(self) -> bytes:
        """COM_BINLOG_DUMP: 4-byte length header (3 length + sequence 0), command, pos, flags, server id, file.

        GTID mode sends an empty file name: the server starts from @slave_connect_state. The library declared
        14 payload bytes here and wrote 15 (a 4-byte NUL "empty name"), leaving a stray byte that the server
        read as the start of the next packet and then dropped the connection at a random point.
        """
        blocking = self._BinLogStreamReader__blocking  # type: ignore[attr-defined]
        flags = 0 if blocking else 0x01  # BINLOG_DUMP_NON_BLOCK
        if self._BinLogStreamReader__annotate_rows_event:  # type: ignore[attr-defined]
            flags |= 0x02  # BINLOG_SEND_ANNOTATE_ROWS_EVENT
        if self.auto_position is not None:
            pos, name = 4, b""
        elif self.log_file is not None:
            pos, name = int(self.log_pos or 4), self.log_file.encode()
        else:
            raise ValueError("a binlog position is required: log_file/log_pos or auto_position (a MariaDB GTID)")
        payload = bytes([COM_BINLOG_DUMP]) + struct.pack("<IHI", pos, flags, self._BinLogStreamReader__server_id) + name  # type: ignore[attr-defined]
        return struct.pack("<I", len(payload)) + payload

    # -- the library path uses the wrapper with the fixed row classes -------------------------------------------
    def fetchone(self):  # type: ignore[override]
        original = binlogstream.BinLogPacketWrapper
        binlogstream.BinLogPacketWrapper = _FixedPacketWrapper
        try:
            return super().fetchone()
        finally:
            binlogstream.BinLogPacketWrapper = original

    # -- the capture hot path ----------------------------------------------------------------------------------
    def connect(self) -> None:
        if not self._BinLogStreamReader__connected_ctl:  # type: ignore[attr-defined]
            self._BinLogStreamReader__connect_to_ctl()  # type: ignore[attr-defined]
        self._BinLogStreamReader__connect_to_stream()  # type: ignore[attr-defined]

    def raw_events(self) -> Iterator[RawEvent]:
        """Yield events as they arrive (blocking). Raises StreamDisconnected when the connection drops."""
        self.connect()
        conn = self._stream_connection
        use_checksum = self._BinLogStreamReader__use_checksum  # type: ignore[attr-defined]
        tail = 4 if use_checksum else 0
        unpack = _HEADER.unpack_from
        while True:
            try:
                pkt = conn._read_packet()
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError, struct.error) as e:
                self.close()
                raise StreamDisconnected(f"binlog connection lost: {e}") from e
            data = pkt._data
            if data[0] == 0xFE and len(data) < 9:  # EOF: the end of a non-blocking dump
                return
            if data[0] != 0:
                continue
            ts, etype, server_id, size, next_pos, _flags = unpack(data, 1)
            yield RawEvent(etype, ts, server_id, next_pos, size, data, 20, len(data) - tail, pkt)

    @staticmethod
    def table_map_key(ev: RawEvent) -> bytes:
        """The table map's bytes without its table id: equal for an unchanged table across statements, so callers
        can cache what they build from it (MariaDB repeats the table map before every statement, and the
        library's parse costs ~50 us)."""
        return bytes(ev.data[ev.body_start + 6 : ev.body_end])

    def parse_table_map(self, ev: RawEvent) -> Any:
        """The library's TableMapEvent parse: names, types, charsets and PK from FULL row metadata."""
        wrapper = BinLogPacketWrapper(
            ev.packet,
            self.table_map,
            self._ctl_connection,
            self.mysql_version,
            self._BinLogStreamReader__use_checksum,  # type: ignore[attr-defined]
            frozenset({TableMapEvent}),
            None, None, None, None,
            False,  # freeze_schema: a new table map after DDL must be re-read
            False,
            False,
            self._BinLogStreamReader__optional_meta_data,  # type: ignore[attr-defined]
            False,
            False,
            self._BinLogStreamReader__post_header_lengths,  # type: ignore[attr-defined]
        )
        return wrapper.event


def binlog_file_index(name: str) -> int:
    """mysql-bin.000042 -> 42 (binlog files sort by their numeric suffix)."""
    return int(name.rsplit(".", 1)[-1])
