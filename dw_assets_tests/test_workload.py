"""Generator and workload: schemas match the model, data is deterministic, the workload sustains its rate."""
from __future__ import annotations

import uuid

import pytest

from dw_assets import cli, db
from dw_assets.identifiers import InvalidIdentifier, quote_ident, quote_qualified
from dw_assets.model import load_model
from dw_assets.workload import apply_batch, client_names, run_workload, seed_clients
from dw_assets.workload.generator import GeneratorError, generate_client_rows, root_row_counts


# ---- no database needed -------------------------------------------------------------------------------------


def test_client_names():
    assert client_names(3) == ["client_001", "client_002", "client_003"]
    assert client_names(["2"]) == ["client_001", "client_002"]
    assert client_names("acme,beta") == ["acme", "beta"]
    assert client_names(["acme", "beta,gamma"]) == ["acme", "beta", "gamma"]
    with pytest.raises(GeneratorError, match="duplicate"):
        client_names("acme,acme")


@pytest.mark.parametrize("bad", ["x;drop database mysql", "it's", "a`b", "a b", "Acme", "acme, beta", "a\"b"])
def test_seed_refuses_bad_names_without_sql(monkeypatch, capsys, bad):
    def refuse(*a, **kw):
        raise AssertionError("a database connection was opened")
    monkeypatch.setattr(db, "connect", refuse)
    with pytest.raises(InvalidIdentifier):
        client_names(bad)
    assert cli.main(["seed", "--clients", bad]) == 2
    assert "invalid client name" in capsys.readouterr().err


def test_generated_rows_are_deterministic_and_consistent():
    import random

    m = load_model()
    a = {t.name: rows for t, rows in generate_client_rows(m, 3000, random.Random(7))}
    b = {t.name: rows for t, rows in generate_client_rows(m, 3000, random.Random(7))}
    c = {t.name: rows for t, rows in generate_client_rows(m, 3000, random.Random(8))}
    assert a == b and a != c
    total = sum(map(len, a.values()))
    assert 0.8 * 3000 <= total <= 1.2 * 3000
    # Every reference points at an existing row; primary keys are unique; NOT NULL columns are filled.
    keys = {}
    for t in m.tables:
        pk_idx = [t.column_names.index(k) for k in t.primary_key]
        pks = [tuple(r[i] for i in pk_idx) for r in a[t.name]]
        assert len(set(pks)) == len(pks), t.name
        keys[t.name] = {p[0] for p in pks}
        for c_ in t.columns:
            i = t.column_names.index(c_.name)
            values = [r[i] for r in a[t.name]]
            if not c_.nullable:
                assert None not in values, f"{t.name}.{c_.name}"
            if c_.references:
                assert {v for v in values if v is not None} <= keys[c_.references.table], f"{t.name}.{c_.name}"
            if c_.type.max_length and c_.type.is_text:
                assert all(v is None or len(v) <= c_.type.max_length for v in values), f"{t.name}.{c_.name}"
    text = " ".join(str(v) for rows in a.values() for r in rows for v in r if isinstance(v, str))
    assert any(ord(ch) > 0xFFFF for ch in text), "some emoji (4-byte utf8mb4) in the data"


def test_root_row_counts_scale():
    m = load_model()
    small, big = root_row_counts(m, 1000), root_row_counts(m, 100_000)
    assert all(big[k] > small[k] for k in small)


# ---- against MariaDB ----------------------------------------------------------------------------------------


def _drop(settings, names):
    with db.connection(settings) as conn, conn.cursor() as cur:
        ctl = quote_ident(settings.control_db)
        for n in names:
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(n)}")
            cur.execute(f"DROP DATABASE IF EXISTS {quote_ident(n + '__staging')}")
            cur.execute(f"DELETE FROM {ctl}.`clients` WHERE `name` = %s", (n,))
            cur.execute(f"DELETE FROM {ctl}.`client_status_history` WHERE `client` = %s", (n,))


@pytest.fixture(scope="module")
def seeded(stack_settings):
    """Three seeded clients, dropped at the end of the module."""
    tag = uuid.uuid4().hex[:6]
    names = [f"wl{tag}_{i}" for i in range(3)]
    result = seed_clients(stack_settings, names, rows_per_client=3000, seed=11)
    yield result
    _drop(stack_settings, names)


def test_seeded_schemas_match_the_model(stack_settings, seeded):
    m = load_model()
    with db.connection(stack_settings) as conn, conn.cursor() as cur:
        for client in seeded:
            for schema in (client.production_db, client.staging_db):
                cur.execute("SELECT TABLE_NAME, COLUMN_NAME, ORDINAL_POSITION, COLUMN_TYPE, IS_NULLABLE, COLUMN_KEY "
                            "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s", (schema,))
                live = {(r[0], r[1]): r[2:] for r in cur.fetchall()}
                expected = {}
                for t in m.tables:
                    for c in t.columns:
                        expected[(t.name, c.name)] = (c.ordinal, c.type.column_type(), "YES" if c.nullable else "NO")
                assert {k: v[:3] for k, v in live.items()} == expected, schema
                cur.execute("SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
                            "WHERE TABLE_SCHEMA = %s AND CONSTRAINT_NAME = 'PRIMARY' "
                            "ORDER BY TABLE_NAME, ORDINAL_POSITION", (schema,))
                pks: dict[str, tuple] = {}
                for tname, cname in cur.fetchall():
                    pks[tname] = pks.get(tname, ()) + (cname,)
                assert pks == {t.name: t.primary_key for t in m.tables}, schema


def test_seeded_rows_and_registry(stack_settings, seeded):
    from dw_assets.onboarding.registry import get_client

    with db.connection(stack_settings) as conn, conn.cursor() as cur:
        for client in seeded:
            assert get_client(stack_settings, client.name).status == "seeded"
            for table, n in client.rows.items():
                cur.execute(f"SELECT COUNT(*) FROM {quote_qualified(client.production_db, table)}")
                assert cur.fetchone()[0] == n
                cur.execute(f"SELECT COUNT(*) FROM {quote_qualified(client.staging_db, table)}")
                assert cur.fetchone()[0] == 0
    # Different clients of one seed call get different data.
    assert seeded[0].rows != seeded[1].rows or seeded[0].rows != seeded[2].rows


def _checksums(settings, database):
    m = load_model()
    tables = ", ".join(quote_qualified(database, t.name) for t in m.tables)
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {tables} EXTENDED")
        return [(r[0].split(".", 1)[1], r[1]) for r in cur.fetchall()]


def test_same_seed_same_data(stack_settings):
    tag = uuid.uuid4().hex[:6]
    a, b, c = f"det{tag}_a", f"det{tag}_b", f"det{tag}_c"
    try:
        seed_clients(stack_settings, [a], rows_per_client=2000, seed=5)
        seed_clients(stack_settings, [b], rows_per_client=2000, seed=5)
        seed_clients(stack_settings, [c], rows_per_client=2000, seed=6)
        assert _checksums(stack_settings, a) == _checksums(stack_settings, b)
        assert _checksums(stack_settings, a) != _checksums(stack_settings, c)
        # Existing databases are refused unless --replace, and nothing is created for the other names.
        with pytest.raises(GeneratorError, match="already exist"):
            seed_clients(stack_settings, [f"det{tag}_d", a], rows_per_client=10, seed=5)
        with db.connection(stack_settings) as conn, conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (f"det{tag}_d",))
            assert cur.fetchone()[0] == 0
        # The deterministic batch: same state + same seed -> same changes.
        r1 = apply_batch(stack_settings, a, seed=3, rows=40)
        r2 = apply_batch(stack_settings, b, seed=3, rows=40)
        assert r1.changes == r2.changes and r1.row_changes >= 40
        assert _checksums(stack_settings, a) == _checksums(stack_settings, b)
    finally:
        _drop(stack_settings, [a, b, c])


def test_workload_changes_rows(stack_settings, seeded):
    names = [c.name for c in seeded]
    stats = run_workload(stack_settings, names, rate=500, duration=2, seed=1)
    assert stats.inserts > 0 and stats.updates > 0 and stats.deletes > 0
    assert stats.commits > 0 and sum(stats.per_client.values()) == stats.row_changes


@pytest.mark.slow
def test_workload_sustains_2000_row_changes_per_second(stack_settings, seeded):
    """Acceptance: >= 90 % of 2000 row changes/s over 5 s, counted as committed changes in the database."""
    names = [c.name for c in seeded]

    def db_rows():
        total = 0
        with db.connection(stack_settings) as conn, conn.cursor() as cur:
            for n in names:
                for t in load_model().tables:
                    cur.execute(f"SELECT COUNT(*) FROM {quote_qualified(n, t.name)}")
                    total += cur.fetchone()[0]
        return total

    before = db_rows()
    stats = run_workload(stack_settings, names, rate=2000, duration=5, seed=2)
    assert stats.row_changes >= 0.9 * 2000 * 5, stats.as_dict()
    assert stats.achieved_rate >= 0.9 * 2000, stats.as_dict()
    assert stats.achieved_rate <= 1.1 * 2000, "paced to the requested rate"
    # The net row growth in the database equals inserts - deletes the workload reported as committed.
    assert db_rows() - before == stats.inserts - stats.deletes
