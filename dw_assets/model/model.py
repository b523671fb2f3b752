"""The standard data model, loaded from YAML into frozen dataclasses and validated.

The model file is the only place that knows table and column names; every stage iterates over
`StandardModel.tables` (parents before children) and reads types, keys, references and hints from here.
"""
from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from .types import TypeParseError, TypeSpec, check_collation, parse_column_type

SHIPPED_MODEL_PATH = Path(__file__).with_name("standard_model.yaml")
IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

# The model format's vocabulary. dw_assets.workload.values implements every generator kind listed here.
GENERATE_KINDS = frozenset(
    """sequence line_number reference uuid email name company phone country city street postcode currency sku
    product_name code money int flag status text json_attrs bytes created_at updated_at date_past date_future
    birth_date geometry""".split()
)
ROLES = frozenset({"money", "status", "mutable", "created_at", "updated_at"})
UPDATABLE_ROLES = frozenset({"money", "status", "mutable"})
COLUMN_MAPPING_MODES = ("none", "name")
_TABLE_KEYS = {"name", "columns", "options", "workload", "description", "indexes"}
_COLUMN_KEYS = {"name", "type", "nullable", "primary_key", "auto_increment", "unique", "default", "references",
                "generate", "role", "description", "on_update", "collation"}
_INDEX_KEYS = {"name", "columns", "unique"}
_OPTION_KEYS = {"change_data_feed", "column_mapping", "scd2"}
_WORKLOAD_KEYS = {"insert_weight", "rows_per_parent", "update_weight", "delete_weight"}
_CURRENT_TS_RE = re.compile(r"^CURRENT_TIMESTAMP(\([0-6]\))?$", re.IGNORECASE)


class ModelError(ValueError):
    """An invalid model file; the message names the file and, where it applies, the table and column."""

    def __init__(self, message: str, file: str | Path | None = None, table: str | None = None,
                 column: str | None = None):
        self.file, self.table, self.column, self.reason = (str(file) if file else None), table, column, message
        where = [w for w in (self.file, table and f"table {table!r}", column and f"column {column!r}") if w]
        super().__init__(": ".join([", ".join(where), message]) if where else message)


@dataclass(frozen=True)
class Reference:
    """`references: table.column` of a column."""

    table: str
    column: str

    def __str__(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # as written in the model, e.g. "DECIMAL(12,2)"
    type: TypeSpec
    nullable: bool
    primary_key: bool
    ordinal: int  # 1-based position in the table
    default: Any = None  # a literal (str/int/float/bool), the string "NULL", or "CURRENT_TIMESTAMP[(n)]"
    has_default: bool = False  # distinguishes `default: null` (DEFAULT NULL) from no default
    references: Reference | None = None
    generate: str | None = None  # generator kind (see GENERATE_KINDS); None = derived from the type
    generate_args: Mapping[str, Any] = field(default_factory=dict, hash=False)
    role: str | None = None  # workload role (see ROLES)
    auto_increment: bool = False
    unique: bool = False
    on_update: str | None = None  # "CURRENT_TIMESTAMP[(n)]": the server sets the column on every UPDATE
    collation: str | None = None  # e.g. "utf8mb4_bin" (`VARCHAR(n) BINARY`); None = the table's default


@dataclass(frozen=True)
class Index:
    """A secondary index (unique or not) of a table, in DDL column order."""

    name: str
    columns: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class TableOptions:
    change_data_feed: bool = True
    column_mapping: str = "none"  # recorded; the local Delta engines cannot read `name` mode tables
    scd2: bool = False

    def delta_properties(self) -> dict[str, str]:
        """Delta table properties these options map to."""
        props = {"delta.enableChangeDataFeed": str(self.change_data_feed).lower()}
        if self.column_mapping != "none":
            props["delta.columnMapping.mode"] = self.column_mapping
        return props


@dataclass(frozen=True)
class WorkloadHints:
    insert_weight: float = 0.0  # new rows (with children) starting at this table; seeded share for roots
    rows_per_parent: tuple[int, int] = (0, 2)  # child rows created with each new parent row
    update_weight: float = 0.0
    delete_weight: float = 0.0


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    options: TableOptions = TableOptions()
    workload: WorkloadHints = WorkloadHints()
    description: str = ""
    indexes: tuple[Index, ...] = ()  # declared in the model (`indexes:`); see `all_indexes`

    @property
    def all_indexes(self) -> tuple[Index, ...]:
        """Every secondary index the DDL creates: `unique: true` columns (ux_<col>), an index per reference
        column not already leading another key (ix_<col>), then the declared `indexes`."""
        out = [Index(f"ux_{c.name}"[:64], (c.name,), True) for c in self.columns if c.unique]
        leading = {self.primary_key[0]} | {i.columns[0] for i in (*out, *self.indexes)}
        out += [Index(f"ix_{c.name}"[:64], (c.name,), False) for c in self.reference_columns
                if c.name not in leading]
        return tuple(out) + self.indexes

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_columns(self) -> tuple[Column, ...]:
        return tuple(self.column(n) for n in self.primary_key)

    @property
    def parent_column(self) -> Column | None:
        """The first NOT NULL reference to another table: this row belongs to that parent row."""
        return next((c for c in self.columns if c.references and not c.nullable), None)

    @property
    def parent(self) -> str | None:
        pc = self.parent_column
        return pc.references.table if pc and pc.references else None

    @property
    def reference_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.references)

    @property
    def updatable_columns(self) -> tuple[Column, ...]:
        """Columns the workload changes in an update (roles money, status, mutable)."""
        return tuple(c for c in self.columns if c.role in UPDATABLE_ROLES and not c.primary_key)


@dataclass(frozen=True)
class StandardModel:
    version: str
    tables: tuple[Table, ...]  # dependency order: referenced tables before referencing ones
    source: str = ""
    description: str = ""
    foreign_keys: bool = False  # emit FOREIGN KEY constraints for `references` (off: indexes only)
    # `reports:` of the model file, resolved against the file's folder; None = the model has no reports.
    reports_dir: Path | None = None

    @property
    def back_references(self) -> tuple[tuple[Table, Column], ...]:
        """Nullable references to a table that is not earlier in `tables` (a cycle, or the table itself): rows
        are inserted with NULL there and the generator fills them in a second pass."""
        pos = {t.name: i for i, t in enumerate(self.tables)}
        return tuple((t, c) for t in self.tables for c in t.reference_columns if pos[c.references.table] >= pos[t.name])

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"model {self.version} has no table {name!r}")

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)

    def children(self, name: str) -> tuple[Table, ...]:
        """Tables whose parent (first NOT NULL reference) is `name`, in dependency order."""
        return tuple(t for t in self.tables if t.parent == name)

    def referenced_by(self, name: str) -> tuple[tuple[Table, Column], ...]:
        return tuple((t, c) for t in self.tables for c in t.reference_columns if c.references.table == name)

    def meta_rows(self) -> list[dict[str, Any]]:
        """One row per column, shaped like the seed's metadata table (IS_NULLABLE/IS_PRIMARY_KEY are 'YES'/'NO')."""
        rows = []
        for t in self.tables:
            props = list(t.options.delta_properties().items())
            opt1 = f"{props[0][0]}={props[0][1]}"
            opt2 = f"{props[1][0]}={props[1][1]}" if len(props) > 1 else None
            for c in t.columns:
                rows.append({
                    "TABLE_NAME": t.name,
                    "COLUMN_NAME": c.name,
                    "DATA_TYPE": c.data_type,
                    "IS_NULLABLE": "YES" if c.nullable else "NO",
                    "CONFIG_OPTION_1": opt1,
                    "CONFIG_OPTION_2": opt2,
                    "ORDINAL_POSITION": c.ordinal,
                    "IS_PRIMARY_KEY": "YES" if c.primary_key else "NO",
                })
        return rows


# ---- loading ----------------------------------------------------------------------------------------------


def load_model(path: str | Path | None = None) -> StandardModel:
    """Load and validate a model file (default: the shipped standard model). Raises ModelError."""
    p = Path(path) if path is not None else SHIPPED_MODEL_PATH
    if p == SHIPPED_MODEL_PATH or (path is not None and p.resolve() == SHIPPED_MODEL_PATH.resolve()):
        return _shipped_model()
    return _load(p)


@lru_cache(maxsize=1)
def _shipped_model() -> StandardModel:
    return _load(SHIPPED_MODEL_PATH)


def _load(p: Path) -> StandardModel:
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError("model file not found", p) from None
    except yaml.YAMLError as e:
        raise ModelError(f"not valid YAML: {e}", p) from None
    return parse_model(raw, source=str(p))


def parse_model(raw: Any, source: str = "<model>") -> StandardModel:
    """Validate a model already parsed from YAML/JSON (a dict) and build the StandardModel."""
    if not isinstance(raw, dict):
        raise ModelError("the model must be a mapping with `version` and `tables`", source)
    unknown = set(raw) - {"version", "tables", "description", "foreign_keys", "reports"}
    if unknown:
        raise ModelError(f"unknown top-level key(s) {sorted(unknown)}", source)
    version = raw.get("version")
    if not isinstance(version, (str, int, float)) or isinstance(version, bool) or not str(version).strip():
        raise ModelError("`version` must be a non-empty string", source)
    raw_tables = raw.get("tables")
    if not isinstance(raw_tables, list) or not raw_tables:
        raise ModelError("`tables` must be a non-empty list", source)

    tables: list[Table] = []
    seen: set[str] = set()
    for i, rt in enumerate(raw_tables):
        t = _parse_table(rt, i, source)
        if t.name.lower() in seen:
            raise ModelError("duplicate table name", source, t.name)
        seen.add(t.name.lower())
        tables.append(t)
    _check_references(tables, source)
    ordered = _check_workload(_dependency_order(tables, source), source)
    fks = raw.get("foreign_keys", False)
    if not isinstance(fks, bool):
        raise ModelError(f"`foreign_keys` must be true or false, got {fks!r}", source)
    return StandardModel(version=str(version), tables=tuple(ordered), source=source,
                         description=str(raw.get("description") or ""), foreign_keys=fks,
                         reports_dir=_reports_dir(raw, source))


def _reports_dir(raw: Mapping[str, Any], source: str) -> Path | None:
    """The model's report SQL folder (`reports: <folder>`, relative to the model file)."""
    value = raw.get("reports")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ModelError(f"`reports` must be a folder of report .sql files, got {value!r}", source)
    base = Path(source).parent if not source.startswith("<") else Path.cwd()
    folder = (base / value).resolve()
    if not folder.is_dir():
        raise ModelError(f"`reports` folder {str(folder)!r} does not exist", source)
    return folder


def _ident(name: Any, what: str, source: str, table: str | None = None, column: str | None = None) -> str:
    if not isinstance(name, str) or not IDENTIFIER_RE.fullmatch(name):
        raise ModelError(f"invalid {what} name {name!r}: must match {IDENTIFIER_RE.pattern}", source, table, column)
    return name


def _bool(value: Any, key: str, source: str, table: str, column: str | None = None) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"`{key}` must be true or false, got {value!r}", source, table, column)
    return value


def _number(value: Any, key: str, source: str, table: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ModelError(f"`{key}` must be a number >= 0, got {value!r}", source, table)
    return float(value)


def _parse_table(rt: Any, index: int, source: str) -> Table:
    if not isinstance(rt, dict):
        raise ModelError(f"tables[{index}] must be a mapping", source)
    name = _ident(rt.get("name"), "table", source, table=f"tables[{index}]")
    unknown = set(rt) - _TABLE_KEYS
    if unknown:
        raise ModelError(f"unknown key(s) {sorted(unknown)}", source, name)
    raw_cols = rt.get("columns")
    if not isinstance(raw_cols, list) or not raw_cols:
        raise ModelError("`columns` must be a non-empty list", source, name)
    columns: list[Column] = []
    seen: set[str] = set()
    for i, rc in enumerate(raw_cols, start=1):
        c = _parse_column(rc, i, name, source)
        if c.name.lower() in seen:  # MariaDB column names are case-insensitive
            raise ModelError("duplicate column name", source, name, c.name)
        seen.add(c.name.lower())
        columns.append(c)
    pk = tuple(c.name for c in columns if c.primary_key)
    if not pk:
        raise ModelError("table has no primary key (mark at least one column `primary_key: true`)", source, name)
    auto = [c for c in columns if c.auto_increment]
    if len(auto) > 1 or (auto and (not auto[0].primary_key or not auto[0].type.is_integer or len(pk) > 1)):
        raise ModelError("auto_increment is allowed on one integer column that is the whole primary key",
                         source, name, auto[0].name)
    table = Table(name=name, columns=tuple(columns), primary_key=pk,
                  options=_parse_options(rt.get("options"), name, source),
                  workload=_parse_workload(rt.get("workload"), name, source),
                  description=str(rt.get("description") or ""))
    table = replace(table, indexes=_parse_indexes(rt.get("indexes"), table, source))
    names = [i.name.lower() for i in table.all_indexes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelError(f"duplicate index name(s) {dupes}", source, name)
    return table


def _parse_indexes(raw: Any, table: Table, source: str) -> tuple[Index, ...]:
    """`indexes: [{columns: [a, b], unique: true, name: ux_a_b}]`: composite unique keys and secondary indexes."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ModelError("`indexes` must be a list of {columns: [...], unique: bool, name: ...}", source, table.name)
    out = []
    for i, ri in enumerate(raw):
        if not isinstance(ri, dict):
            raise ModelError(f"indexes[{i}] must be a mapping", source, table.name)
        unknown = set(ri) - _INDEX_KEYS
        if unknown:
            raise ModelError(f"indexes[{i}]: unknown key(s) {sorted(unknown)}", source, table.name)
        cols = ri.get("columns")
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) for c in cols):
            raise ModelError(f"indexes[{i}].columns must be a non-empty list of column names", source, table.name)
        if len({c.lower() for c in cols}) != len(cols):
            raise ModelError(f"indexes[{i}] lists a column twice: {cols}", source, table.name)
        for c in cols:
            if c not in table.column_names:
                raise ModelError(f"indexes[{i}] names unknown column {c!r}", source, table.name)
            if not table.column(c).type.indexable:
                raise ModelError(f"indexes[{i}]: {table.column(c).type.sql()} cannot be in an index", source,
                                 table.name, c)
        unique = _bool(ri.get("unique", False), f"indexes[{i}].unique", source, table.name)
        name = ri.get("name") or (("ux_" if unique else "ix_") + "_".join(cols))[:64]
        _ident(name, "index", source, table.name)
        if tuple(cols) == table.primary_key:
            raise ModelError(f"indexes[{i}] repeats the primary key", source, table.name)
        out.append(Index(name, tuple(cols), unique))
    return tuple(out)


def _parse_column(rc: Any, ordinal: int, table: str, source: str) -> Column:
    if not isinstance(rc, dict):
        raise ModelError(f"columns[{ordinal - 1}] must be a mapping", source, table)
    name = _ident(rc.get("name"), "column", source, table, column=f"columns[{ordinal - 1}]")
    unknown = set(rc) - _COLUMN_KEYS
    if unknown:
        raise ModelError(f"unknown key(s) {sorted(unknown)}", source, table, name)
    if "type" not in rc:
        raise ModelError("missing `type`", source, table, name)
    try:
        spec, collation = parse_column_type(rc["type"])
        if rc.get("collation") is not None:
            if not isinstance(rc["collation"], str):
                raise TypeParseError(f"`collation` must be a name, got {rc['collation']!r}")
            if collation is not None and collation != rc["collation"].lower():
                raise TypeParseError(f"type says collation {collation}, `collation` says {rc['collation']}")
            collation = rc["collation"].lower()
            check_collation(spec, collation)
    except TypeParseError as e:
        raise ModelError(str(e), source, table, name) from None
    pk = _bool(rc.get("primary_key", False), "primary_key", source, table, name)
    nullable = _bool(rc.get("nullable", not pk), "nullable", source, table, name)
    if pk and nullable:
        raise ModelError("a primary-key column cannot be nullable", source, table, name)
    if not spec.indexable and (pk or rc.get("unique")):
        raise ModelError(f"{spec.sql()} cannot be a primary or unique key", source, table, name)

    ref = None
    if rc.get("references") is not None:
        r = rc["references"]
        if not isinstance(r, str) or r.count(".") != 1:
            raise ModelError(f"`references` must be `table.column`, got {r!r}", source, table, name)
        rt, rcol = r.split(".")
        ref = Reference(_ident(rt, "referenced table", source, table, name),
                        _ident(rcol, "referenced column", source, table, name))

    gen, gen_args = _parse_generate(rc.get("generate"), table, name, source)
    role = rc.get("role")
    if role is not None:
        if role not in ROLES:
            raise ModelError(f"unknown role {role!r} (one of {sorted(ROLES)})", source, table, name)
        ok = {"money": spec.base in ("decimal", "float", "double") or spec.is_integer,
              "status": spec.base == "enum",
              "created_at": spec.base in ("datetime", "timestamp", "date"),
              "updated_at": spec.base in ("datetime", "timestamp", "date")}.get(role, True)
        if not ok:
            raise ModelError(f"role {role!r} does not fit type {spec.sql()}", source, table, name)
        if pk:
            raise ModelError("primary-key columns cannot have a workload role", source, table, name)

    has_default = "default" in rc
    default = rc.get("default")
    if has_default:
        default = _check_default(default, spec, nullable, table, name, source)
    on_update = rc.get("on_update")
    if on_update is not None:
        on_update = _check_current_timestamp(on_update, spec, "on_update", table, name, source)
    return Column(name=name, data_type=str(rc["type"]).strip(), type=spec, nullable=nullable, primary_key=pk,
                  ordinal=ordinal, default=default, has_default=has_default, references=ref, generate=gen,
                  generate_args=gen_args, role=role,
                  auto_increment=_bool(rc.get("auto_increment", False), "auto_increment", source, table, name),
                  unique=_bool(rc.get("unique", False), "unique", source, table, name),
                  on_update=on_update, collation=collation)


def _parse_generate(g: Any, table: str, column: str, source: str) -> tuple[str | None, dict[str, Any]]:
    if g is None:
        return None, {}
    if isinstance(g, str):
        kind, args = g, {}
    elif isinstance(g, dict) and isinstance(g.get("kind"), str):
        kind, args = g["kind"], {k: v for k, v in g.items() if k != "kind"}
    else:
        raise ModelError(f"`generate` must be a kind or {{kind: ..., args}}, got {g!r}", source, table, column)
    if kind not in GENERATE_KINDS:
        raise ModelError(f"unknown generator kind {kind!r} (one of {sorted(GENERATE_KINDS)})", source, table, column)
    for k, v in args.items():
        if k == "prefix":
            if not isinstance(v, str):
                raise ModelError("generate.prefix must be a string", source, table, column)
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ModelError(f"generate.{k} must be a number, got {v!r}", source, table, column)
        elif k.startswith("p_") and not 0 <= v <= 1:
            raise ModelError(f"generate.{k} is a probability (0..1), got {v!r}", source, table, column)
    if "min" in args and "max" in args and args["min"] > args["max"]:
        raise ModelError("generate.min is greater than generate.max", source, table, column)
    return kind, args


def _check_current_timestamp(value: Any, spec: TypeSpec, key: str, table: str, column: str, source: str) -> str:
    """CURRENT_TIMESTAMP[(n)] on a DATETIME/TIMESTAMP column, normalized to the precision the server applies."""
    m = _CURRENT_TS_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ModelError(f"`{key}` must be CURRENT_TIMESTAMP or CURRENT_TIMESTAMP(n), got {value!r}",
                         source, table, column)
    if spec.base not in ("datetime", "timestamp"):
        raise ModelError(f"{key} CURRENT_TIMESTAMP needs a DATETIME/TIMESTAMP column, not {spec.sql()}",
                         source, table, column)
    fsp = spec.fsp or 0
    given = int(m.group(1)[1:-1]) if m.group(1) else None
    if key == "on_update":  # MariaDB refuses ON UPDATE with less precision than the column (error 1294)
        if given is not None and given < fsp:
            raise ModelError(f"on_update CURRENT_TIMESTAMP({given}) has less precision than {spec.sql()}; "
                             f"write CURRENT_TIMESTAMP({fsp})", source, table, column)
        given = fsp
    n = fsp if given is None else min(given, fsp)
    return f"CURRENT_TIMESTAMP({n})" if n else "CURRENT_TIMESTAMP"


_TIME_RE = re.compile(r"^-?\d{1,3}:\d{2}:\d{2}(\.\d{1,6})?$")
_TEMPORAL_RANGES = {"datetime": (datetime(1000, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999)),
                    "timestamp": (datetime(1970, 1, 1, 0, 0, 1), datetime(2038, 1, 19, 3, 14, 7, 999999))}


def _check_default(value: Any, spec: TypeSpec, nullable: bool, table: str, column: str, source: str) -> Any:
    """Validate a `default` against the column's type; returns it normalized (YAML dates become ISO text)."""
    if value is None or value == "NULL":
        if not nullable:
            raise ModelError("DEFAULT NULL on a NOT NULL column", source, table, column)
        return value
    if isinstance(value, str) and _CURRENT_TS_RE.match(value):
        return _check_current_timestamp(value, spec, "default", table, column, source)
    if isinstance(value, datetime):  # YAML reads an unquoted 2024-01-02 10:00:00 as a datetime
        value = value.isoformat(sep=" ")
    elif isinstance(value, date):
        value = value.isoformat()
    if not isinstance(value, (str, int, float, bool)):
        raise ModelError(f"default must be a scalar, got {value!r}", source, table, column)
    if spec.base in ("json", "tinytext", "text", "mediumtext", "longtext") or spec.is_binary or spec.is_geometry:
        raise ModelError(f"{spec.sql()} columns cannot have a literal default here", source, table, column)
    problem = _default_problem(value, spec)
    if problem:
        raise ModelError(f"default {value!r} is not a valid {spec.sql()}: {problem}", source, table, column)
    return value


def _default_problem(value: str | int | float | bool, spec: TypeSpec) -> str | None:  # noqa: C901 - per type
    """Why a literal default does not fit its type (None: it fits). MariaDB's own check, spelled out."""
    b, text = spec.base, str(value)
    if isinstance(value, bool) and not (spec.is_boolean or (b == "bit" and spec.length == 1)):
        return "true/false is only a default of BOOLEAN (TINYINT(1)) or BIT(1)"
    if spec.is_integer or b in ("year", "bit"):
        if isinstance(value, float) or not re.fullmatch(r"-?\d+", text if not isinstance(value, bool) else "1"):
            return "not an integer"
        n = int(value)
        lo, hi = spec.integer_range() if spec.is_integer else (
            (0, 2 ** (spec.length or 1) - 1) if b == "bit" else (1901, 2155))
        if b == "year" and n == 0:
            return None
        return None if lo <= n <= hi else f"out of range {lo}..{hi}"
    if b in ("decimal", "float", "double"):
        try:
            d = Decimal(text)
        except InvalidOperation:
            return "not a number"
        if not d.is_finite():
            return "not a finite number"
        if b == "decimal":
            assert spec.precision is not None and spec.scale is not None
            digits = d.as_tuple()
            frac = max(0, -int(digits.exponent))
            whole = len(digits.digits) - frac if len(digits.digits) > frac else 0
            if frac > spec.scale:
                return f"more than {spec.scale} decimal places"
            if whole > spec.precision - spec.scale or (spec.unsigned and d < 0):
                return "out of range"
        elif spec.unsigned and d < 0:
            return "negative value for UNSIGNED"
        return None
    if b == "date":
        try:
            date.fromisoformat(text)
        except ValueError:
            return "not a date YYYY-MM-DD"
        return None
    if b in ("datetime", "timestamp"):
        try:
            ts = datetime.fromisoformat(text)
        except ValueError:
            return "not a date-time YYYY-MM-DD HH:MM:SS[.ffffff]"
        lo, hi = _TEMPORAL_RANGES[b]
        return None if lo <= ts <= hi else f"outside {lo:%Y-%m-%d}..{hi:%Y-%m-%d}"
    if b == "time":
        return None if _TIME_RE.fullmatch(text) else "not a time [-]HH:MM:SS[.ffffff]"
    if b == "enum":
        return None if text in spec.values else f"not one of {list(spec.values)}"
    if b == "set":
        bad = [v for v in text.split(",") if v and v not in spec.values]
        return f"{bad} not among {list(spec.values)}" if bad else None
    if b == "uuid":
        import uuid

        try:
            uuid.UUID(text)
        except ValueError:
            return "not a UUID"
        return None
    if spec.max_length is not None and len(text) > spec.max_length:
        return f"longer than {spec.max_length} characters"
    return None


def _parse_options(raw: Any, table: str, source: str) -> TableOptions:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ModelError("`options` must be a mapping", source, table)
    unknown = set(raw) - _OPTION_KEYS
    if unknown:
        raise ModelError(f"unknown option(s) {sorted(unknown)}", source, table)
    mapping = raw.get("column_mapping", "none")
    if mapping not in COLUMN_MAPPING_MODES:
        raise ModelError(f"option column_mapping must be one of {list(COLUMN_MAPPING_MODES)}, got {mapping!r}",
                         source, table)
    return TableOptions(change_data_feed=_bool(raw.get("change_data_feed", True), "change_data_feed", source, table),
                        column_mapping=mapping, scd2=_bool(raw.get("scd2", False), "scd2", source, table))


def _parse_workload(raw: Any, table: str, source: str) -> WorkloadHints:
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ModelError("`workload` must be a mapping", source, table)
    unknown = set(raw) - _WORKLOAD_KEYS
    if unknown:
        raise ModelError(f"unknown workload hint(s) {sorted(unknown)}", source, table)
    rpp = raw.get("rows_per_parent", [0, 2])
    if (not isinstance(rpp, (list, tuple)) or len(rpp) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                       for x in rpp) or not 0 <= rpp[0] <= rpp[1]):
        raise ModelError(f"workload.rows_per_parent must be [min, max] with 0 <= min <= max, got {rpp!r}",
                         source, table)
    uw = raw.get("update_weight")
    return WorkloadHints(
        insert_weight=_number(raw.get("insert_weight", 0), "workload.insert_weight", source, table),
        rows_per_parent=(rpp[0], rpp[1]),
        # -1 = not given: _check_workload defaults it to 1 when the table has updatable columns.
        update_weight=-1.0 if uw is None else _number(uw, "workload.update_weight", source, table),
        delete_weight=_number(raw.get("delete_weight", 0), "workload.delete_weight", source, table),
    )


def _check_references(tables: list[Table], source: str) -> None:
    by_name = {t.name: t for t in tables}
    for t in tables:
        for c in t.reference_columns:
            ref = c.references
            target = by_name.get(ref.table)
            if target is None:
                raise ModelError(f"references missing table {ref.table!r}", source, t.name, c.name)
            try:
                tc = target.column(ref.column)
            except KeyError:
                raise ModelError(f"references missing column {ref}", source, t.name, c.name) from None
            if target.primary_key != (tc.name,):
                raise ModelError(f"references {ref}, which is not the single-column primary key of {ref.table!r}",
                                 source, t.name, c.name)
            if tc.type.base != c.type.base:
                raise ModelError(f"type {c.type.sql()} does not match referenced {ref} ({tc.type.sql()})",
                                 source, t.name, c.name)


def _dependency_order(tables: list[Table], source: str) -> list[Table]:
    """Parents before children (stable: file order among independent tables).

    A cycle through a nullable reference (store.manager_id <-> staff.store_id, or a table referencing itself)
    is broken there: that column becomes a back-reference (`StandardModel.back_references`), filled after the
    inserts. A cycle of NOT NULL references cannot be inserted at all: an error naming the cycle.
    """
    deps = {t.name: {c.references.table for c in t.reference_columns} for t in tables}
    strict = {t.name: {c.references.table for c in t.reference_columns if not c.nullable} for t in tables}
    ordered: list[Table] = []
    done: set[str] = set()
    remaining = list(tables)
    while remaining:
        ready = (next((t for t in remaining if deps[t.name] <= done), None)
                 or next((t for t in remaining if strict[t.name] <= done), None))
        if ready is None:
            cyc = _find_cycle(strict, {t.name for t in remaining})
            col = next(c.name for c in _table(tables, cyc[0]).reference_columns
                       if c.references.table == cyc[1] and not c.nullable)
            raise ModelError(f"reference cycle {' -> '.join(cyc)} through NOT NULL columns (make one of them "
                             f"nullable: it is then filled after the inserts)", source, cyc[0], col)
        ordered.append(ready)
        done.add(ready.name)
        remaining.remove(ready)
    return ordered


def _table(tables: list[Table], name: str) -> Table:
    return next(t for t in tables if t.name == name)


def _find_cycle(deps: dict[str, set[str]], names: set[str]) -> list[str]:
    start = sorted(names)[0]
    path, node = [start], start
    while True:
        node = sorted(d for d in deps[node] if d in names)[0]
        if node in path:
            return path[path.index(node):] + [node]
        path.append(node)


def _check_workload(tables: list[Table], source: str) -> list[Table]:
    """Fill defaulted update weights; refuse deletes on tables other tables reference (they would orphan rows)."""
    out = []
    for t in tables:
        w = t.workload
        if w.update_weight < 0:
            w = WorkloadHints(w.insert_weight, w.rows_per_parent, 1.0 if t.updatable_columns else 0.0,
                              w.delete_weight)
        elif w.update_weight > 0 and not t.updatable_columns:
            raise ModelError("workload.update_weight > 0 but no column has role money, status or mutable",
                             source, t.name)
        if w.delete_weight > 0:
            users = [f"{u.name}.{c.name}" for u in tables for c in u.reference_columns if c.references.table == t.name]
            if users:
                raise ModelError(f"workload.delete_weight > 0 but the table is referenced by {users}", source, t.name)
        out.append(replace(t, workload=w))
    return out
