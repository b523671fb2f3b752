"""Classified differences between two schema snapshots, with the DDL that would reconcile them.

`diff_schemas(reference, actual)` lists what `actual` does differently from `reference` (the model, or
production when checking staging). Each difference is breaking, additive or informational for the lake.

Classification (why):
- breaking: the pipeline cannot apply it or silver would silently diverge: a missing table or column, a key
  change, a type that narrows or changes family, a new column whose existing rows get a non-NULL value
  (NOT NULL or a non-NULL DEFAULT: ALTER fills existing rows without binlog events, so silver needs a
  re-snapshot of the table).
- additive: the lake evolves without losing information: a new table, a new nullable column without default,
  a widening type change (INT->BIGINT, VARCHAR(50)->VARCHAR(100), DECIMAL(10,2)->DECIMAL(12,2), new ENUM labels
  at the end, FLOAT->DOUBLE, TEXT->MEDIUMTEXT) whose Arrow type holds every old value, and NOT NULL -> NULL
  (silver columns are nullable).
- informational: column order, NULL -> NOT NULL (every value already fits), a changed collation or
  ON UPDATE CURRENT_TIMESTAMP (values still arrive through the binlog as they are), a missing or extra index or
  foreign key (compared by columns and uniqueness, not by name). A collation change on a primary-key column is
  breaking: it changes which keys the source considers equal, and silver merges by key.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pyarrow as pa

from dw_assets.identifiers import quote_ident, quote_qualified
from dw_assets.model import TypeSpec, arrow_type

from .schema_snapshot import ColumnSnapshot, IndexSnapshot, SchemaSnapshot, TableSnapshot

Kind = Literal["missing_table", "extra_table", "missing_column", "extra_column", "type_changed",
               "nullability_changed", "primary_key_changed", "column_order_changed", "collation_changed",
               "on_update_changed", "missing_index", "extra_index", "missing_foreign_key", "extra_foreign_key"]
Severity = Literal["breaking", "additive", "informational"]
SEVERITY_RANK = {"breaking": 0, "additive": 1, "informational": 2}


@dataclass(frozen=True)
class Difference:
    kind: Kind
    table: str
    column: str | None
    old: str | None  # the reference's value (type, nullability, key...), None where it does not apply
    new: str | None  # the actual value
    severity: Severity
    reason: str  # one line on why this severity
    ddl: str | None = None  # a statement that makes the target database match the reference side, if any

    @property
    def fingerprint(self) -> str:
        """Stable identity of this difference (for alert de-duplication): same change -> same fingerprint."""
        raw = json.dumps([self.kind, self.table, self.column, self.old, self.new], ensure_ascii=False)
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    @property
    def is_breaking(self) -> bool:
        return self.severity == "breaking"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fingerprint": self.fingerprint}


# ---- type compatibility -----------------------------------------------------------------------------------

_TEXT_ORDER = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295}
_BLOB_ORDER = {"tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 4_294_967_295}


def _arrow_holds(old: pa.DataType, new: pa.DataType) -> bool:
    """Can every value of Arrow type `old` be stored in `new` without loss (what Delta type widening allows)?"""
    if old == new:
        return True
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        return new.bit_width >= old.bit_width and pa.types.is_signed_integer(new) == pa.types.is_signed_integer(old)
    if pa.types.is_integer(old) and pa.types.is_decimal(new):
        digits = {8: 3, 16: 5, 32: 10, 64: 19}[old.bit_width]
        return new.precision - new.scale >= digits
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        return new.scale >= old.scale and new.precision - new.scale >= old.precision - old.scale
    if pa.types.is_floating(old) and pa.types.is_floating(new):
        return new.bit_width >= old.bit_width
    return False


def is_widening(old: TypeSpec, new: TypeSpec) -> bool:
    """True when `new` accepts every value of `old` in MariaDB AND in the lake's Arrow type.

    Integer display widths are ignored (no effect on values) except TINYINT(1), which is a boolean in the lake.
    """
    if old == new:
        return True
    try:
        a_old, a_new = arrow_type(old), arrow_type(new)
    except Exception:  # a type without an Arrow mapping: only identical types are safe
        return False
    if old.is_integer and new.is_integer:
        if old.is_boolean != new.is_boolean:
            return False
        lo_o, hi_o = old.integer_range()
        lo_n, hi_n = new.integer_range()
        return lo_n <= lo_o and hi_n >= hi_o and _arrow_holds(a_old, a_new)
    if old.base == "decimal" and new.base == "decimal":
        assert old.precision is not None and old.scale is not None
        assert new.precision is not None and new.scale is not None
        digits_fit = new.scale >= old.scale and new.precision - new.scale >= old.precision - old.scale
        # Beyond 38 digits the lake stores DECIMAL as text: crossing that line changes the Arrow family.
        same_family = (old.precision > 38) == (new.precision > 38)
        return digits_fit and same_family and not (new.unsigned and not old.unsigned)
    if old.base in ("float", "double") and new.base in ("float", "double"):
        return _arrow_holds(a_old, a_new)
    if old.base in ("datetime", "timestamp", "time") and old.base == new.base:
        return (new.fsp or 0) >= (old.fsp or 0)  # same Arrow type (microseconds); more precision only
    if old.base in ("enum", "set") and new.base == old.base:
        return new.values[: len(old.values)] == old.values  # labels appended at the end
    if old.is_text and new.is_text and pa.types.is_string(a_new):
        if old.base in ("enum", "set", "uuid", "json") or new.base in ("enum", "set", "uuid"):
            return new.base in ("varchar", "text", "mediumtext", "longtext") and _text_len(new) >= _max_text(old)
        return _text_len(new) >= _text_len(old)
    if old.is_binary and new.is_binary:
        return _bin_len(new) >= _bin_len(old) and not (old.base == "binary" and new.base == "binary")
    return False


def _text_len(t: TypeSpec) -> int:
    return _TEXT_ORDER.get(t.base) or (t.length or 1)


def _max_text(t: TypeSpec) -> int:
    if t.base in ("enum", "set"):
        return sum(len(v) + 1 for v in t.values)
    if t.base == "uuid":
        return 36
    return _TEXT_ORDER["longtext"]  # json


def _bin_len(t: TypeSpec) -> int:
    return _BLOB_ORDER.get(t.base) or (t.length or 1)


# ---- diff -------------------------------------------------------------------------------------------------


def diff_schemas(reference: SchemaSnapshot, actual: SchemaSnapshot, target_db: str | None = None
                 ) -> list[Difference]:
    """What `actual` does differently from `reference`, breaking first.

    With `target_db`, each difference carries DDL that makes `target_db` (holding `actual`) match `reference`
    again (model -> production). When `actual` is the side that is ahead (staging vs production), use
    `adopt_ddl` instead, which writes the reverse change for the reference's database.
    """
    out: list[Difference] = []
    for ref_t in reference.tables:
        act_t = actual.table(ref_t.name)
        if act_t is None:
            out.append(Difference("missing_table", ref_t.name, None, None, None, "breaking",
                                  "a table the pipeline reads is gone",
                                  ref_t.create_sql(target_db) if target_db else None))
            continue
        out += _diff_table(ref_t, act_t, target_db)
        out += _diff_indexes(ref_t, act_t, target_db)
        if reference.has_foreign_keys and actual.has_foreign_keys:
            out += _diff_foreign_keys(ref_t, act_t, target_db)
    for act_t in actual.tables:
        if reference.table(act_t.name) is None:
            out.append(Difference("extra_table", act_t.name, None, None, None, "additive",
                                  "a new table the model does not list (not captured until the model adds it)",
                                  None))
    # Additions before removals: DDL applied in this order never drops an index a foreign key still needs.
    out.sort(key=lambda d: (SEVERITY_RANK[d.severity], d.table, d.column or "", d.kind.startswith("extra_"), d.kind))
    return out


def _diff_table(ref: TableSnapshot, act: TableSnapshot, target_db: str | None) -> list[Difference]:
    out: list[Difference] = []
    qt = quote_qualified(target_db, ref.name) if target_db else None
    for rc in ref.columns:
        ac = act.column(rc.name)
        if ac is None:
            out.append(Difference("missing_column", ref.name, rc.name, rc.column_type, None, "breaking",
                                  "a column the pipeline reads was dropped",
                                  f"ALTER TABLE {qt} ADD COLUMN {rc.definition}{_after(ref, rc)}" if qt else None))
            continue
        if rc.column_type != ac.column_type:
            sev, why = _classify_type(rc, ac)
            out.append(Difference("type_changed", ref.name, rc.name, rc.column_type, ac.column_type, sev, why,
                                  f"ALTER TABLE {qt} MODIFY COLUMN {rc.definition}" if qt else None))
        if rc.collation != ac.collation and rc.collation and ac.collation:
            in_key = rc.name in ref.primary_key
            out.append(Difference(
                "collation_changed", ref.name, rc.name, rc.collation, ac.collation,
                "breaking" if in_key else "informational",
                "the source now compares key values differently; silver merges by the key" if in_key
                else "sorting and comparison in the source change; values arrive as they are",
                f"ALTER TABLE {qt} MODIFY COLUMN {rc.definition}" if qt else None))
        if rc.on_update != ac.on_update:
            out.append(Difference("on_update_changed", ref.name, rc.name, rc.on_update, ac.on_update,
                                  "informational", "the server's automatic update of the column changed; its "
                                  "values still arrive through the binlog",
                                  f"ALTER TABLE {qt} MODIFY COLUMN {rc.definition}" if qt else None))
        if rc.nullable != ac.nullable:
            relaxed = ac.nullable and rc.name not in ref.primary_key
            out.append(Difference(
                "nullability_changed", ref.name, rc.name, _null(rc.nullable), _null(ac.nullable),
                "additive" if relaxed else "informational",
                "NULLs now allowed; silver columns are nullable" if relaxed else "NOT NULL added; every value fits",
                f"ALTER TABLE {qt} MODIFY COLUMN {rc.definition}" if qt else None))
    for ac in act.columns:
        if ref.column(ac.name) is None:
            if ac.nullable and ac.has_null_default:
                sev, why = "additive", "new nullable column: existing rows are NULL on both sides"
            else:
                sev, why = "breaking", ("new column with a non-NULL value for existing rows (NOT NULL or DEFAULT): "
                                        "filled without binlog events, silver needs a re-snapshot of the table")
            out.append(Difference("extra_column", ref.name, ac.name, None, ac.column_type, sev, why,  # type: ignore[arg-type]
                                  f"ALTER TABLE {qt} DROP COLUMN {quote_ident(ac.name)}" if qt else None))
    if tuple(ref.primary_key) != tuple(act.primary_key):
        ddl = None
        if qt and ref.primary_key:
            cols = ", ".join(quote_ident(c) for c in ref.primary_key)
            ddl = f"ALTER TABLE {qt} DROP PRIMARY KEY, ADD PRIMARY KEY ({cols})"
        out.append(Difference("primary_key_changed", ref.name, None, ",".join(ref.primary_key) or None,
                              ",".join(act.primary_key) or None, "breaking",
                              "silver merges by the primary key", ddl))
    common = [c for c in ref.column_names if act.column(c) is not None]
    act_order = [c for c in act.column_names if ref.column(c) is not None]
    if common != act_order:
        out.append(Difference("column_order_changed", ref.name, None, ",".join(common), ",".join(act_order),
                              "informational", "capture and the lake address columns by name", None))
    return out


def _index_sql(qt: str, ix: IndexSnapshot) -> str:
    cols = ", ".join(quote_ident(c) for c in ix.columns)
    return f"ALTER TABLE {qt} ADD {'UNIQUE ' if ix.unique else ''}INDEX {quote_ident(ix.name)} ({cols})"


def _diff_indexes(ref: TableSnapshot, act: TableSnapshot, target_db: str | None) -> list[Difference]:
    """Secondary indexes by (columns, unique): a renamed index is no difference, a changed one is."""
    qt = quote_qualified(target_db, ref.name) if target_db else None

    def shape(ix: IndexSnapshot) -> tuple:
        return ix.columns, ix.unique

    text = _index_text
    act_shapes, ref_shapes = {shape(i) for i in act.indexes}, {shape(i) for i in ref.indexes}
    out = [Difference("missing_index", ref.name, None, text(ix), None, "informational",
                      "an index or unique key of the reference is missing (the lake does not depend on it)",
                      _index_sql(qt, ix) if qt else None)
           for ix in ref.indexes if shape(ix) not in act_shapes]
    out += [Difference("extra_index", ref.name, None, None, text(ix), "informational",
                       "an index or unique key the reference does not have (the lake does not depend on it)",
                       f"ALTER TABLE {qt} DROP INDEX {quote_ident(ix.name)}" if qt else None)
            for ix in act.indexes if shape(ix) not in ref_shapes and not _fk_index(act, ix)]
    return out


def _index_text(ix: IndexSnapshot) -> str:
    return ("UNIQUE " if ix.unique else "") + "(" + ",".join(ix.columns) + ")"


def _fk_index(t: TableSnapshot, ix: IndexSnapshot) -> bool:
    # InnoDB creates an index for a foreign key that has none (named after the constraint).
    return not ix.unique and any(fk.name == ix.name and (fk.column,) == ix.columns for fk in t.foreign_keys)


def _diff_foreign_keys(ref: TableSnapshot, act: TableSnapshot, target_db: str | None) -> list[Difference]:
    qt = quote_qualified(target_db, ref.name) if target_db else None
    text = {fk: f"{fk.column} -> {fk.ref_table}.{fk.ref_column}" for fk in (*ref.foreign_keys, *act.foreign_keys)}
    act_shapes = {text[f] for f in act.foreign_keys}
    ref_shapes = {text[f] for f in ref.foreign_keys}
    out = []
    for fk in ref.foreign_keys:
        if text[fk] not in act_shapes:
            ddl = (f"ALTER TABLE {qt} ADD CONSTRAINT {quote_ident(fk.name)} FOREIGN KEY ({quote_ident(fk.column)}) "
                   f"REFERENCES {quote_qualified(target_db, fk.ref_table)} ({quote_ident(fk.ref_column)})"
                   if qt and target_db else None)
            out.append(Difference("missing_foreign_key", ref.name, fk.column, text[fk], None, "informational",
                                  "a foreign-key constraint is missing: the source no longer enforces it", ddl))
    for fk in act.foreign_keys:
        if text[fk] not in ref_shapes:
            out.append(Difference("extra_foreign_key", ref.name, fk.column, None, text[fk], "informational",
                                  "a foreign-key constraint the reference does not have",
                                  f"ALTER TABLE {qt} DROP FOREIGN KEY {quote_ident(fk.name)}" if qt else None))
    return out


def _classify_type(ref: ColumnSnapshot, act: ColumnSnapshot) -> tuple[Severity, str]:
    old, new = ref.type, act.type
    if old is None or new is None:
        return "breaking", "a type the model does not support"
    if is_widening(old, new):
        return "additive", "widening: every old value fits the new type in MariaDB and in the lake"
    return "breaking", "narrowing or a different type family: old values or the lake's type would not fit"


def _null(nullable: bool) -> str:
    return "NULL" if nullable else "NOT NULL"


def _after(table: TableSnapshot, col: ColumnSnapshot) -> str:
    prev = [c for c in table.columns if c.ordinal < col.ordinal]
    return f" AFTER {quote_ident(prev[-1].name)}" if prev else " FIRST"


def adopt_ddl(diffs: list[Difference], source: SchemaSnapshot, target_db: str) -> list[Difference]:
    """Attach DDL that brings `target_db` up to `source` (the side that is ahead, e.g. staging -> production).

    `diffs` came from `diff_schemas(reference=<target's snapshot>, actual=source)`, so the reconciling change
    is the reverse of each difference: an extra column in `source` is ADDed to the target, and so on.
    """
    out = []
    for d in diffs:
        qt = quote_qualified(target_db, d.table)
        src_t = source.table(d.table)
        src_c = src_t.column(d.column) if (src_t and d.column) else None
        ddl: str | None = None
        if d.kind == "extra_table" and src_t:
            ddl = src_t.create_sql(target_db)
        elif d.kind == "missing_table":
            ddl = f"DROP TABLE {qt}"
        elif d.kind == "extra_column" and src_t and src_c:
            ddl = f"ALTER TABLE {qt} ADD COLUMN {src_c.definition}{_after(src_t, src_c)}"
        elif d.kind == "missing_column" and d.column:
            ddl = f"ALTER TABLE {qt} DROP COLUMN {quote_ident(d.column)}"
        elif d.kind == "extra_index" and src_t:
            ix = next((i for i in src_t.indexes if _index_text(i) == d.new), None)
            ddl = _index_sql(qt, ix) if ix else None
        elif d.kind in ("type_changed", "nullability_changed", "collation_changed", "on_update_changed") and src_c:
            ddl = f"ALTER TABLE {qt} MODIFY COLUMN {src_c.definition}"
        elif d.kind == "primary_key_changed" and src_t and src_t.primary_key:
            cols = ", ".join(quote_ident(c) for c in src_t.primary_key)
            ddl = f"ALTER TABLE {qt} DROP PRIMARY KEY, ADD PRIMARY KEY ({cols})"
        out.append(Difference(d.kind, d.table, d.column, d.old, d.new, d.severity, d.reason, ddl))
    return out


# ---- rendering --------------------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    return str(v if v is not None else "").replace("|", "\\|").replace("\n", " ")


def differences_markdown(diffs: list[Difference], with_ddl: bool = True) -> str:
    """A markdown table of differences for check metadata and alerts."""
    if not diffs:
        return "_no differences_"
    head = ["severity", "kind", "table", "column", "old", "new"] + (["ddl"] if with_ddl else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in diffs:
        row = [d.severity, d.kind, d.table, d.column, d.old, d.new] + ([f"`{d.ddl}`" if d.ddl else ""]
                                                                       if with_ddl else [])
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return "\n".join(lines)


def severity_counts(diffs: list[Difference]) -> dict[str, int]:
    counts = {"breaking": 0, "additive": 0, "informational": 0}
    for d in diffs:
        counts[d.severity] += 1
    return counts
