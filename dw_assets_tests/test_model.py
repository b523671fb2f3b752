"""The model file: loading, validation errors that name file/table/column, meta rows, types and DDL text."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from dw_assets.model import ModelError, load_model, parse_type
from dw_assets.model.ddl import create_database_statements, create_table_sql
from dw_assets.model.model import GENERATE_KINDS, SHIPPED_MODEL_PATH
from dw_assets.model.types import TypeParseError, arrow_type

GOOD = {
    "version": "t1",
    "tables": [
        {"name": "parents", "columns": [
            {"name": "id", "type": "BIGINT", "primary_key": True},
            {"name": "label", "type": "VARCHAR(20)", "nullable": False},
        ]},
        {"name": "kids", "columns": [
            {"name": "id", "type": "INT", "primary_key": True},
            {"name": "parent_id", "type": "BIGINT", "nullable": False, "references": "parents.id"},
        ]},
    ],
}


def write(tmp_path: Path, doc: dict | str) -> Path:
    p = tmp_path / "model.yaml"
    p.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return p


def mutated(fn) -> dict:
    import copy

    doc = copy.deepcopy(GOOD)
    fn(doc)
    return doc


def test_shipped_model_loads_in_dependency_order():
    m = load_model()
    assert m.version
    assert len(m.tables) >= 6
    seen: set[str] = set()
    for t in m.tables:
        assert t.primary_key
        for c in t.reference_columns:
            assert c.references.table in seen, f"{t.name} before its parent {c.references.table}"
        seen.add(t.name)


def test_shipped_model_covers_the_required_types():
    bases = {c.type.base for t in load_model() for c in t.columns}
    assert {"bigint", "int", "decimal", "datetime", "timestamp", "date", "varchar", "enum", "json",
            "tinyint"} <= bases
    assert bases & {"text", "blob", "mediumblob", "mediumtext", "longtext"}
    cols = [c for t in load_model() for c in t.columns]
    assert any(c.references and c.nullable for c in cols), "a nullable foreign key"
    assert any(c.type.is_boolean for c in cols)


def test_no_model_name_in_python_code():
    """The model is data: no table name of the shipped model may appear in the package's Python code."""
    names = set(load_model().table_names)
    pkg = Path(__file__).resolve().parents[1] / "dw_assets"
    for py in pkg.rglob("*.py"):
        text = py.read_text()
        for n in names:
            assert f'"{n}"' not in text and f"'{n}'" not in text, f"{py} names table {n}"


def test_meta_rows_shape():
    m = load_model()
    rows = m.meta_rows()
    assert len(rows) == sum(len(t.columns) for t in m.tables)
    assert set(rows[0]) == {"TABLE_NAME", "COLUMN_NAME", "DATA_TYPE", "IS_NULLABLE", "CONFIG_OPTION_1",
                            "CONFIG_OPTION_2", "ORDINAL_POSITION", "IS_PRIMARY_KEY"}
    for r in rows:
        assert r["IS_NULLABLE"] in ("YES", "NO") and r["IS_PRIMARY_KEY"] in ("YES", "NO")
        assert r["CONFIG_OPTION_1"] in ("delta.enableChangeDataFeed=true", "delta.enableChangeDataFeed=false")
        assert r["CONFIG_OPTION_2"] in (None, "delta.columnMapping.mode=name")
        t = m.table(r["TABLE_NAME"])
        c = t.column(r["COLUMN_NAME"])
        assert r["ORDINAL_POSITION"] == c.ordinal == t.columns.index(c) + 1
        assert r["DATA_TYPE"] == c.data_type


def test_good_custom_model(tmp_path):
    m = load_model(write(tmp_path, GOOD))
    assert m.table_names == ("parents", "kids")
    assert m.table("kids").parent == "parents"
    assert m.table("parents").options.delta_properties() == {"delta.enableChangeDataFeed": "true"}


def test_dependency_order_ignores_file_order(tmp_path):
    m = load_model(write(tmp_path, mutated(lambda d: d["tables"].reverse())))
    assert m.table_names == ("parents", "kids")


@pytest.mark.parametrize(
    "mutate, table, column, fragment",
    [
        (lambda d: d["tables"][0]["columns"][1].update(type="VARCHARR(20)"), "parents", "label", "unknown"),
        (lambda d: d["tables"][0]["columns"][1].update(type="DECIMAL(2,5)"), "parents", "label", "DECIMAL"),
        (lambda d: d["tables"][0]["columns"][1].update(type="ENUM(a,b)"), "parents", "label", "quoted"),
        (lambda d: d["tables"][0]["columns"].append({"name": "LABEL", "type": "INT"}), "parents", "LABEL",
         "duplicate"),
        (lambda d: d["tables"][0]["columns"][0].update(primary_key=False), "parents", None, "primary key"),
        (lambda d: d["tables"][1]["columns"][1].update(references="nobody.id"), "kids", "parent_id",
         "missing table"),
        (lambda d: d["tables"][1]["columns"][1].update(references="parents.nope"), "kids", "parent_id",
         "missing column"),
        (lambda d: d["tables"][0].update(options={"change_data_feed": "yes"}), "parents", None, "true or false"),
        (lambda d: d["tables"][0].update(options={"column_mapping": "id"}), "parents", None, "column_mapping"),
        (lambda d: d["tables"][0]["columns"][1].update(name="bad-name"), "parents", "columns[1]", "invalid"),
        (lambda d: d["tables"][0].update(name="1table"), "tables[0]", None, "invalid table name"),
        (lambda d: d["tables"][0]["columns"][1].update(generate="nonsense"), "parents", "label", "generator"),
        (lambda d: d["tables"][0]["columns"][1].update(nulable=True), "parents", "label", "unknown key"),
        (lambda d: d["tables"][0]["columns"][0].update(nullable=True), "parents", "id", "nullable"),
        (lambda d: d["tables"][0]["columns"][1].update(role="status"), "parents", "label", "role"),
        (lambda d: d["tables"][0].update(workload={"delete_weight": 1}), "parents", None, "referenced by"),
        (lambda d: d["tables"][0]["columns"].append({"name": "kid_id", "type": "INT", "nullable": False,
                                                     "references": "kids.id"}),
         "kids", "parent_id", "reference cycle kids -> parents -> kids through NOT NULL"),
    ],
)
def test_invalid_models_name_file_table_column(tmp_path, mutate, table, column, fragment):
    path = write(tmp_path, mutated(mutate))
    with pytest.raises(ModelError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"table {table!r}" in msg
    if column:
        assert f"column {column!r}" in msg
    assert fragment.lower() in msg.lower()


def test_yaml_syntax_error_names_file(tmp_path):
    path = write(tmp_path, "version: 1\ntables: [\n")
    with pytest.raises(ModelError, match="not valid YAML") as exc:
        load_model(path)
    assert str(path) in str(exc.value)


def test_unquoted_decimal_in_flow_mapping_is_caught(tmp_path):
    """YAML splits `{type: DECIMAL(12,2)}` at the comma: the loader reports it instead of guessing."""
    path = write(tmp_path, textwrap.dedent("""\
        version: "1"
        tables:
          - name: t
            columns:
              - {name: id, type: INT, primary_key: true}
              - {name: amount, type: DECIMAL(12,2)}
        """))
    with pytest.raises(ModelError, match="column 'amount'"):
        load_model(path)


@pytest.mark.parametrize(
    "text, base, attrs",
    [
        ("DECIMAL(12,2)", "decimal", {"precision": 12, "scale": 2}),
        ("numeric(5)", "decimal", {"precision": 5, "scale": 0}),
        ("INT UNSIGNED", "int", {"unsigned": True}),
        ("integer", "int", {}),
        ("TINYINT(1)", "tinyint", {"length": 1}),
        ("BOOLEAN", "tinyint", {"length": 1}),
        ("DATETIME(6)", "datetime", {"fsp": 6}),
        ("TIMESTAMP", "timestamp", {"fsp": None}),
        ("varchar(255)", "varchar", {"length": 255}),
        ("ENUM('a','it''s')", "enum", {"values": ("a", "it's")}),
        ("JSON", "json", {}),
        ("MEDIUMBLOB", "mediumblob", {}),
    ],
)
def test_parse_type(text, base, attrs):
    spec = parse_type(text)
    assert spec.base == base
    for k, v in attrs.items():
        assert getattr(spec, k) == v
    assert parse_type(spec.sql()) == spec  # canonical spelling round-trips


@pytest.mark.parametrize("bad", ["", "VARCHAR", "DECIMAL(70,2)", "INT ZEROFILL", "ENUM()", "ENUM('a','a')",
                                 "DATETIME(7)", "VARCHAR(10) UNSIGNED", "GEOMETRY(4)", "FLOAT(7,2)", "INT(x)"])
def test_parse_type_rejects(bad):
    with pytest.raises(TypeParseError):
        parse_type(bad)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("DECIMAL(12,2)", pa.decimal128(12, 2)),
        ("DATETIME(6)", pa.timestamp("us")),
        ("TIMESTAMP", pa.timestamp("us", tz="UTC")),
        ("DATE", pa.date32()),
        ("BIGINT", pa.int64()),
        ("INT", pa.int32()),
        ("INT UNSIGNED", pa.int64()),
        ("BIGINT UNSIGNED", pa.decimal128(20, 0)),
        ("TINYINT(1)", pa.bool_()),
        ("TINYINT", pa.int8()),
        ("VARCHAR(10)", pa.string()),
        ("TEXT", pa.string()),
        ("ENUM('a')", pa.string()),
        ("JSON", pa.string()),
        ("BLOB", pa.binary()),
    ],
)
def test_arrow_type(text, expected):
    assert arrow_type(parse_type(text)) == expected


def test_every_shipped_column_has_an_arrow_type_and_known_generator():
    for t in load_model():
        for c in t.columns:
            arrow_type(c.type)
            assert c.generate is None or c.generate in GENERATE_KINDS


def test_ddl_quotes_identifiers_and_indexes_references():
    m = load_model()
    for t in m.tables:
        sql = create_table_sql(t, "some_db")
        assert sql.startswith("CREATE TABLE `some_db`.`")
        assert "utf8mb4" in sql and "InnoDB" in sql
        assert "FOREIGN KEY" not in sql  # see ddl.py: references are indexed, not enforced
        for c in t.reference_columns:
            assert f"`{c.name}`" in sql


def test_shipped_path_is_packaged():
    assert SHIPPED_MODEL_PATH.exists()


# ---- model format features: defaults, ON UPDATE, collations, indexes, cycles, foreign keys ------------------


def col_doc(**column) -> dict:
    return mutated(lambda d: d["tables"][0]["columns"].append({"name": "x", **column}))


@pytest.mark.parametrize("column, fragment", [
    ({"type": "INT", "default": "abc"}, "default 'abc' is not a valid INT: not an integer"),
    ({"type": "TINYINT UNSIGNED", "default": 300}, "out of range 0..255"),
    ({"type": "DECIMAL(5,2)", "default": "1234.5"}, "out of range"),
    ({"type": "DECIMAL(5,2)", "default": 1.234}, "more than 2 decimal places"),
    ({"type": "DATE", "default": "2024-02-30"}, "not a date"),
    ({"type": "DATETIME", "default": "yesterday"}, "not a date-time"),
    ({"type": "TIMESTAMP", "default": "1960-01-01 00:00:00"}, "outside 1970-01-01"),
    ({"type": "VARCHAR(3)", "default": "abcd"}, "longer than 3"),
    ({"type": "SET('a','b')", "default": "a,c"}, "['c'] not among"),
    ({"type": "INT", "default": True}, "only a default of BOOLEAN"),
    ({"type": "TIME", "default": "25h"}, "not a time"),
    ({"type": "POINT", "default": "POINT(1 2)"}, "cannot have a literal default"),
    ({"type": "INT", "default": "CURRENT_TIMESTAMP"}, "needs a DATETIME/TIMESTAMP"),
    ({"type": "DATETIME(6)", "on_update": "CURRENT_TIMESTAMP(2)"}, "write CURRENT_TIMESTAMP(6)"),
    ({"type": "DATE", "on_update": "CURRENT_TIMESTAMP"}, "needs a DATETIME/TIMESTAMP"),
    ({"type": "DATETIME", "on_update": "NOW"}, "must be CURRENT_TIMESTAMP"),
    ({"type": "INT BINARY"}, "INT has no collation"),
    ({"type": "VARCHAR(5) COLLATE latin1_bin"}, "not a utf8mb4 collation"),
    ({"type": "VARCHAR(5) BINARY", "collation": "utf8mb4_general_ci"}, "type says collation utf8mb4_bin"),
    ({"type": "POINT", "unique": True}, "cannot be a primary or unique key"),
])
def test_column_values_are_checked_against_the_type(tmp_path, column, fragment):
    path = write(tmp_path, col_doc(**column))
    with pytest.raises(ModelError) as exc:
        load_model(path)
    assert "table 'parents', column 'x'" in str(exc.value)
    assert fragment in str(exc.value)


def test_valid_defaults_on_update_and_collations_reach_the_ddl(tmp_path):
    doc = mutated(lambda d: d["tables"][0]["columns"].extend([
        {"name": "born", "type": "DATE", "default": "2020-01-31"},
        {"name": "seen", "type": "TIMESTAMP(6)", "nullable": False, "default": "CURRENT_TIMESTAMP",
         "on_update": "CURRENT_TIMESTAMP"},
        {"name": "code", "type": "VARCHAR(8) BINARY"},
        {"name": "tag", "type": "CHAR(2)", "collation": "utf8mb4_general_ci", "default": "ab"},
        {"name": "spot", "type": "POINT"},
    ]))
    t = load_model(write(tmp_path, doc)).table("parents")
    sql = create_table_sql(t)
    assert "`born` DATE NULL DEFAULT '2020-01-31'" in sql  # YAML's date object became ISO text
    assert "`seen` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)" in sql
    assert "`code` VARCHAR(8) COLLATE utf8mb4_bin NULL" in sql
    assert "`tag` CHAR(2) COLLATE utf8mb4_general_ci NULL DEFAULT 'ab'" in sql
    assert arrow_type(t.column("spot").type) == pa.struct([("wkb", pa.binary()), ("srid", pa.int32())])


def test_composite_unique_keys_and_indexes(tmp_path):
    doc = mutated(lambda d: d["tables"][1].update(indexes=[
        {"columns": ["parent_id", "id"], "unique": True}, {"name": "ix_rev", "columns": ["id", "parent_id"]}]))
    kids = load_model(write(tmp_path, doc)).table("kids")
    sql = create_table_sql(kids)
    assert "UNIQUE KEY `ux_parent_id_id` (`parent_id`, `id`)" in sql and "KEY `ix_rev` (`id`, `parent_id`)" in sql
    assert "ix_parent_id" not in sql  # the composite key already leads with the reference column
    for bad, fragment in [([{"columns": ["nope"]}], "unknown column 'nope'"),
                          ([{"columns": ["id", "id"]}], "lists a column twice"),
                          ([{"columns": ["parent_id", "id"], "name": "ix_a"},
                            {"columns": ["parent_id"], "name": "ix_a"}],
                           "duplicate index name"),
                          ([{"columns": ["id"]}], "repeats the primary key"),
                          ({"columns": ["id"]}, "must be a list")]:
        with pytest.raises(ModelError, match=fragment) as exc:
            load_model(write(tmp_path, mutated(lambda d: d["tables"][1].update(indexes=bad))))
        assert "table 'kids'" in str(exc.value)


def test_nullable_reference_cycle_and_self_reference_are_back_references(tmp_path):
    doc = mutated(lambda d: (
        d["tables"][0]["columns"].append({"name": "favourite_kid", "type": "INT", "references": "kids.id"}),
        d["tables"][1]["columns"].append({"name": "sibling", "type": "INT", "references": "kids.id"}),
        d.update(foreign_keys=True)))
    m = load_model(write(tmp_path, doc))
    assert m.table_names == ("parents", "kids")
    assert [(t.name, c.name) for t, c in m.back_references] == [("parents", "favourite_kid"), ("kids", "sibling")]
    stmts = create_database_statements(m, "db")
    # Constraints come after every CREATE TABLE, so the cycle can be created.
    assert [s.split()[0] for s in stmts] == ["CREATE"] * 3 + ["ALTER"] * 3
    assert "FOREIGN KEY (`favourite_kid`) REFERENCES `db`.`kids` (`id`)" in stmts[3]
    assert not any("FOREIGN KEY" in s for s in create_database_statements(load_model(write(tmp_path, GOOD)), "db"))
    with pytest.raises(ModelError, match="`foreign_keys` must be true or false"):
        load_model(write(tmp_path, mutated(lambda d: d.update(foreign_keys="yes"))))
