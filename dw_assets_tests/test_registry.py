"""The client registry: names refused before any SQL, status changes recorded, CLI output."""
from __future__ import annotations

import json
import uuid

import pytest

from dw_assets import cli, db
from dw_assets.identifiers import InvalidIdentifier, quote_ident
from dw_assets.onboarding import registry

BAD_NAMES = ["x;drop database mysql", "it's", "a`b", "two words", "Upper", "", "a" * 60, "mysql", "acme__staging"]


@pytest.fixture
def no_sql(monkeypatch):
    """Fail the test if anything tries to open a database connection."""
    def refuse(*a, **kw):
        raise AssertionError("a database connection was opened")
    monkeypatch.setattr(db, "connect", refuse)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_refused_before_sql(no_sql, name):
    from dw_assets.settings import Settings

    s = Settings()
    with pytest.raises(InvalidIdentifier):
        registry.register_client(s, name)
    with pytest.raises(InvalidIdentifier):
        registry.set_status(s, name, "active", "test")
    with pytest.raises(InvalidIdentifier):
        registry.get_client(s, name)


def test_cli_activate_bad_name_changes_nothing(no_sql, capsys):
    assert cli.main(["clients", "activate", "x;drop database mysql"]) == 2
    assert "invalid client name" in capsys.readouterr().err


@pytest.fixture
def client_name(stack_settings):
    name = "reg_" + uuid.uuid4().hex[:8]
    yield name
    with db.connection(stack_settings) as conn, conn.cursor() as cur:
        ctl = quote_ident(stack_settings.control_db)
        cur.execute(f"DELETE FROM {ctl}.`clients` WHERE `name` = %s", (name,))
        cur.execute(f"DELETE FROM {ctl}.`client_status_history` WHERE `client` = %s", (name,))


def test_register_and_status_history(stack_settings, client_name):
    c = registry.register_client(stack_settings, client_name, model_version="9.9")
    assert (c.name, c.production_db, c.staging_db, c.status, c.model_version) == (
        client_name, client_name, f"{client_name}__staging", "seeded", "9.9")
    with pytest.raises(registry.RegistryError, match="already registered"):
        registry.register_client(stack_settings, client_name)

    registry.set_status(stack_settings, client_name, "onboarding", "alice")
    registry.set_status(stack_settings, client_name, "active", "bob")
    registry.set_status(stack_settings, client_name, "active", "bob")  # no-op: no history row
    with pytest.raises(registry.RegistryError, match="cannot go from active to seeded"):
        registry.set_status(stack_settings, client_name, "seeded", "carol")
    with pytest.raises(registry.RegistryError, match="invalid status"):
        registry.set_status(stack_settings, client_name, "bogus", "carol")

    hist = registry.status_history(stack_settings, client_name)
    assert [(h["old_status"], h["new_status"], h["changed_by"]) for h in hist] == [
        (None, "seeded", "dw"), ("seeded", "onboarding", "alice"), ("onboarding", "active", "bob")]
    assert registry.get_client(stack_settings, client_name).status == "active"
    assert client_name in [c.name for c in registry.list_clients(stack_settings, status="active")]
    assert client_name not in [c.name for c in registry.list_clients(stack_settings, status="paused")]


def test_unknown_client(stack_settings):
    with pytest.raises(registry.RegistryError, match="unknown client"):
        registry.set_status(stack_settings, "no_such_client_x", "active", "t")


def test_cli_list_json_and_activate(stack_settings, client_name, monkeypatch, capsys):
    monkeypatch.setattr(cli, "load_settings", lambda home=None: stack_settings)
    registry.register_client(stack_settings, client_name)
    assert cli.main(["clients", "activate", client_name]) == 0
    capsys.readouterr()
    assert cli.main(["clients", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    mine = [r for r in rows if r["name"] == client_name]
    assert mine and mine[0]["status"] == "active"
    assert {"name", "production_db", "staging_db", "status"} <= set(mine[0])
    assert cli.main(["clients", "list"]) == 0
    assert client_name in capsys.readouterr().out
