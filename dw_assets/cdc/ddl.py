"""DDL statements from the binlog: which database and table a statement touches, and whether it is a TRUNCATE.

Only what capture needs to route a statement (schema topic, op t); the statement text itself is published as is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_IDENT = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$\u0080-\uffff]+)"
_QUALIFIED = rf"(?P<first>{_IDENT})(?:\s*\.\s*(?P<second>{_IDENT}))?"
_COMMENTS = re.compile(r"/\*(?!!).*?\*/|^\s*(?:--|#)[^\n]*\n", re.S)
_PATTERNS = [
    ("truncate", re.compile(rf"^\s*TRUNCATE\s+(?:TABLE\s+)?{_QUALIFIED}", re.I)),
    ("table", re.compile(
        rf"^\s*(?:CREATE|ALTER|DROP|RENAME)\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?(?:ONLINE\s+|IGNORE\s+)*TABLE\s+"
        rf"(?:IF\s+(?:NOT\s+)?EXISTS\s+)?{_QUALIFIED}", re.I)),
    ("index", re.compile(
        rf"^\s*(?:CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?INDEX\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
        rf"{_IDENT}\s+ON\s+{_QUALIFIED}", re.I)),
    ("database", re.compile(rf"^\s*(?:CREATE|DROP|ALTER)\s+(?:DATABASE|SCHEMA)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?P<first>{_IDENT})", re.I)),
]
_NON_DDL = re.compile(r"^\s*(?:BEGIN|COMMIT|ROLLBACK|XA\s|SAVEPOINT|SET\s|INSERT|UPDATE|DELETE|REPLACE|FLUSH|ANALYZE|OPTIMIZE|GRANT|REVOKE|CREATE\s+USER|DROP\s+USER|ALTER\s+USER)", re.I)


@dataclass(frozen=True)
class DdlTarget:
    database: str
    table: str | None
    truncate: bool = False


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


def parse_ddl(statement: str, session_db: str) -> DdlTarget | None:
    """The database/table a DDL statement touches, or None for statements that are not schema changes."""
    text = _COMMENTS.sub(" ", statement).strip()
    if not text or _NON_DDL.match(text):
        return None
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        if kind == "database":
            return DdlTarget(_unquote(m["first"]), None)
        first, second = m["first"], m["second"]
        db, table = (_unquote(first), _unquote(second)) if second else (session_db, _unquote(first))
        return DdlTarget(db, table, truncate=kind == "truncate")
    # Other DDL (views, routines, triggers...): attribute it to the session database without a table.
    return DdlTarget(session_db, None) if session_db else None
