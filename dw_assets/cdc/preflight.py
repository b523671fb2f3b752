"""Server checks before capture starts: binlog settings that capture depends on, with a clear message each."""
from __future__ import annotations

import pymysql

REQUIRED = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    # Column names must come from the binlog itself: with MINIMAL, events written before an ALTER would be
    # decoded with today's names.
    "binlog_row_metadata": "FULL",
}


class PreflightError(RuntimeError):
    """The server is not configured for capture; the message says what to set."""


def check_server(conn: pymysql.Connection) -> dict[str, str]:
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', "
            "'binlog_row_metadata', 'log_bin_compress', 'server_id', 'binlog_checksum')"
        )
        values = {str(k).lower(): str(v) for k, v in cur.fetchall()}
    problems = [
        f"{name}={values.get(name, 'unset')} (need {want})"
        for name, want in REQUIRED.items()
        if values.get(name, "").upper() != want
    ]
    if values.get("log_bin_compress", "OFF").upper() == "ON":
        problems.append("log_bin_compress=ON (need OFF: compressed row events are not decoded)")
    if problems:
        raise PreflightError(
            "MariaDB is not configured for CDC: " + "; ".join(problems)
            + ". Set them in the server configuration ([mariadbd] section) and restart the server."
        )
    return values
