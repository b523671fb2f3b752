"""Validation and quoting of SQL identifiers and client names.

Every identifier that reaches SQL goes through `quote_ident`; client names are validated before any SQL runs.
"""
from __future__ import annotations

import re

CLIENT_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
STAGING_SUFFIX = "__staging"
CONTROL_DB = "dw_control"

# Names a client may not take: SQL reserved words that are also plausible client names, MariaDB's own
# schemas, and the project's control database.
RESERVED_NAMES = frozenset(
    """
    accessible add all alter analyze and as asc asensitive before between bigint binary blob both by call cascade
    case change char character check collate column condition constraint continue convert create cross current_date
    current_role current_time current_timestamp current_user cursor database databases day_hour day_microsecond
    day_minute day_second dec decimal declare default delayed delete delete_domain_id desc describe deterministic
    distinct distinctrow div do_domain_ids double drop dual each else elseif enclosed escaped except exists exit
    explain false fetch float float4 float8 for force foreign from fulltext general grant group having high_priority
    hour_microsecond hour_minute hour_second if ignore ignore_domain_ids ignore_server_ids in index infile inner inout
    insensitive insert int int1 int2 int3 int4 int8 integer intersect interval into is iterate join key keys kill
    leading leave left like limit linear lines load localtime localtimestamp lock long longblob longtext loop
    low_priority master_heartbeat_period master_ssl_verify_server_cert match maxvalue mediumblob mediumint mediumtext
    middleint minute_microsecond minute_second mod modifies natural not no_write_to_binlog null numeric offset on
    optimize option optionally or order out outer outfile over page_checksum parse_vcol_expr partition position
    precision primary procedure purge range read reads read_write real recursive ref_system_id references regexp
    release rename repeat replace require resignal restrict return returning revoke right rlike rows row_number
    schema schemas second_microsecond select sensitive separator set show signal slow smallint spatial specific sql
    sqlexception sqlstate sqlwarning sql_big_result sql_calc_found_rows sql_small_result ssl starting stats_auto_recalc
    stats_persistent stats_sample_pages straight_join table terminated then tinyblob tinyint tinytext to trailing
    trigger true undo union unique unlock unsigned update usage use using utc_date utc_time utc_timestamp values
    varbinary varchar varcharacter varying when where while window with write xor year_month zerofill
    mysql information_schema performance_schema sys test dw_control
    """.split()
)


class InvalidIdentifier(ValueError):
    """A name that cannot be used as a client name or SQL identifier."""


def validate_client_name(name: str) -> str:
    """Return `name` if it is a valid client name, else raise InvalidIdentifier saying why."""
    if not isinstance(name, str) or not CLIENT_NAME_RE.fullmatch(name):
        raise InvalidIdentifier(
            f"invalid client name {name!r}: must match {CLIENT_NAME_RE.pattern} "
            "(lower-case letter first, then 1-40 lower-case letters, digits or underscores)"
        )
    if name in RESERVED_NAMES:
        raise InvalidIdentifier(f"invalid client name {name!r}: it is a reserved word or system schema")
    if name.endswith(STAGING_SUFFIX.lstrip("_")) and STAGING_SUFFIX in name:
        raise InvalidIdentifier(f"invalid client name {name!r}: the suffix {STAGING_SUFFIX!r} is reserved for staging")
    return name


def staging_db_for(client: str) -> str:
    return f"{client}{STAGING_SUFFIX}"


def quote_ident(name: str) -> str:
    """Quote a MariaDB identifier with backticks (doubling embedded backticks).

    Refuses empty names, NUL bytes and names longer than MariaDB's 64-character limit, which the server would
    reject or silently truncate.
    """
    if not isinstance(name, str) or not name:
        raise InvalidIdentifier(f"invalid SQL identifier {name!r}: empty")
    if "\x00" in name:
        raise InvalidIdentifier(f"invalid SQL identifier {name!r}: contains a NUL byte")
    if len(name) > 64:
        raise InvalidIdentifier(f"invalid SQL identifier {name!r}: longer than 64 characters")
    return "`" + name.replace("`", "``") + "`"


def quote_qualified(*parts: str) -> str:
    return ".".join(quote_ident(p) for p in parts)
