"""Quarantine: a change that does not decode waits in <lake>/quarantine/<client>/<table> with its raw event,
coordinates and error; other keys apply, later changes of its key are held; a retry after a model fix applies
them in order and empties it; discard drops the bad change and applies the held ones; the per-table check fails
then passes and alerts once."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dw_assets.checks import alerts
from dw_assets.lakehouse import quarantine
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.quarantine_resolve import check_quarantine, discard, retry, summarize
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, TINY_MODEL, account
from dw_assets_tests.test_checks_alerts import Webhook

NO_SOURCE = StaticSourceSchema({})
MICROS = 1735787045123456  # 2025-01-02T03:04:05.123456 as Debezium's MicroTimestamp (DATETIME(4-6))


def model_with(tmp_path: Path, opened_at: str):
    """The tiny model with `opened_at` declared as `opened_at` (DATETIME(3) reads integers as epoch millis)."""
    p = tmp_path / f"model-{opened_at.replace('(', '').replace(')', '')}.yaml"
    p.write_text(TINY_MODEL.replace("{name: opened_at, type: DATETIME(6)", f"{{name: opened_at, type: {opened_at}"))
    return load_model(p)


def silver(settings: Settings, client: str) -> dict[int, tuple[str, str]]:
    t = read_delta(settings, "silver", client, "accounts")
    return {r["account_id"]: (r["displayName"], str(r["balance"])) for r in t.to_pylist()}


def poisoned(settings: Settings, tmp_path: Path) -> tuple[str, LandingFeed]:
    """Key 2's create carries epoch micros that a DATETIME(3) model reads as millis (out of range): it fails;
    the later update of key 2 is held; keys 1 and 3 apply."""
    client = unique_client("qr")
    feed = LandingFeed(settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [
        ("c", account(1)), ("c", account(2, opened_at=MICROS)), ("c", account(3))]))
    feed.write("accounts", feed.events("accounts", [
        ("u", account(2, "2.22", displayName="two")), ("u", account(1, "1.11")), ("d", {"account_id": 3})]))
    r = apply_client(settings, client, model_with(tmp_path, "DATETIME(3)"), source_schema=NO_SOURCE)
    assert r.ok, r.failed
    assert (r.tables["accounts"].quarantined, r.tables["accounts"].held) == (1, 1)
    return client, feed


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))


def test_poison_event_is_quarantined_others_apply_and_retry_after_model_fix(local_settings, tmp_path):
    client, feed = poisoned(local_settings, tmp_path)
    assert silver(local_settings, client) == {1: ("name 1", "1.11")}  # 3 was created and deleted; 2 waits
    q = quarantine.read_quarantine(local_settings, client, "accounts").to_pylist()
    assert [(r["status"], r["op"], json.loads(r["key"])) for r in q] == [
        ("failed", "c", {"account_id": 2}), ("held", "u", {"account_id": 2})]
    failed = q[0]
    assert "column opened_at: cannot decode 1735787045123456 as DATETIME(3)" in failed["error"]
    assert json.loads(failed["after"])["opened_at"] == MICROS  # the raw event, as it came
    assert (failed["source_file"], failed["kafka_topic"], failed["kafka_partition"]) == (
        "dw-bin.000001", feed.topic("accounts"), 0)
    assert failed["source_pos"] and failed["kafka_offset"] == 1

    # More changes of key 2 arrive while it waits: held too; a new key applies.
    feed.write("accounts", feed.events("accounts", [("u", account(2, "2.50")), ("c", account(4))]))
    old_model = model_with(tmp_path, "DATETIME(3)")
    assert apply_client(local_settings, client, old_model, source_schema=NO_SOURCE).ok
    assert set(silver(local_settings, client)) == {1, 4}
    assert [s.held for s in summarize(local_settings, client, ["accounts"])] == [2]

    # A retry with the unfixed model changes nothing; after the fix (DATETIME(6): micros) everything applies.
    (r,) = retry(local_settings, client, old_model, ["accounts"], source_schema=NO_SOURCE)
    assert (r.taken, r.applied, r.still_failed, r.still_held) == (3, 0, 1, 2)
    fixed = model_with(tmp_path, "DATETIME(6)")
    (r,) = retry(local_settings, client, fixed, ["accounts"], source_schema=NO_SOURCE)
    assert (r.taken, r.applied, r.still_failed) == (3, 3, 0)
    assert silver(local_settings, client) == {1: ("name 1", "1.11"), 2: ("name 2", "2.50"), 4: ("name 4", "1.10")}
    assert quarantine.open_rows(local_settings, client, "accounts").num_rows == 0
    # SCD2 history has key 2's versions in order: the create (with its micros), then both updates.
    hist = [r for r in read_delta(local_settings, "silver_history", client, "accounts").to_pylist()
            if r["account_id"] == 2]
    hist.sort(key=lambda r: r["valid_from"])
    assert [(r["balance"].to_eng_string(), r["is_current"]) for r in hist] == [
        ("1.10", False), ("2.22", False), ("2.50", True)]
    assert hist[0]["opened_at"].year == 2025
    # The next apply is clean and does not re-hold key 2.
    feed.write("accounts", feed.events("accounts", [("u", account(2, "3.00", displayName="two"))]))
    r = apply_client(local_settings, client, fixed, source_schema=NO_SOURCE)
    assert r.ok and r.tables["accounts"].quarantined == r.tables["accounts"].held == 0
    assert silver(local_settings, client)[2] == ("two", "3.00")


def test_discard_drops_the_failed_change_with_a_record_and_applies_the_held(local_settings, tmp_path):
    client, _ = poisoned(local_settings, tmp_path)
    (r,) = discard(local_settings, client, model_with(tmp_path, "DATETIME(3)"), ["accounts"], source_schema=NO_SOURCE)
    assert (r.applied, r.still_failed) == (1, 0)
    assert silver(local_settings, client)[2] == ("two", "2.22")  # the update is a full image: an upsert
    q = quarantine.read_quarantine(local_settings, client, "accounts").to_pylist()
    assert [(r["status"], r["op"]) for r in q] == [("discarded", "c")] and q[0]["resolved_at"] is not None
    assert check_quarantine(local_settings, client, "accounts").passed


def test_events_read_again_are_quarantined_once(local_settings, tmp_path, monkeypatch):
    """Silver fails after the quarantine append (a lost commit race): the next run re-reads the batch from bronze
    and must not quarantine the same events twice."""
    from dw_assets.lakehouse import apply as apply_mod
    from dw_assets.lakehouse.commit_retry import CommitRetriesExhausted

    real = apply_mod.merge_silver
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise CommitRetriesExhausted("silver merge lost the commit race")
        return real(*args, **kwargs)

    monkeypatch.setattr(apply_mod, "merge_silver", flaky)
    client = unique_client("qr")
    feed = LandingFeed(local_settings, client, KEYS)
    feed.write("accounts", feed.events("accounts", [("c", account(1)), ("c", account(2, opened_at=MICROS)),
                                                    ("u", account(2, "2.22"))]))
    model = model_with(tmp_path, "DATETIME(3)")
    assert not apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok
    assert apply_client(local_settings, client, model, source_schema=NO_SOURCE).ok  # catches up from bronze
    assert len(calls) == 2
    rows = quarantine.open_rows(local_settings, client, "accounts").to_pylist()
    assert [(r["status"], r["kafka_offset"]) for r in rows] == [("failed", 1), ("held", 2)]
    assert silver(local_settings, client) == {1: ("name 1", "1.10")}


def test_check_fails_while_quarantined_alerts_once_and_passes_after_retry(stack_settings, tmp_path):
    hook = Webhook()
    try:
        settings = replace(stack_settings, home=tmp_path, landing_url=str(tmp_path / "landing"),
                           lake_url=str(tmp_path / "lake"), alert_webhook_url=hook.url)
        client, _ = poisoned(settings, tmp_path)

        def evaluate() -> bool:  # what the Dagster check does (dw_assets/defs/checks.py)
            res = check_quarantine(settings, client, "accounts")
            alerts.process_findings(settings, client, "silver_quarantine_empty:accounts", res.findings("accounts"))
            return res.passed

        assert not evaluate() and not evaluate()
        firing = [b for b in hook.received if b.get("status") == "firing"]
        assert len(firing) == 1 and "accounts" in json.dumps(firing[0])
        retry(settings, client, model_with(tmp_path, "DATETIME(6)"), ["accounts"], source_schema=NO_SOURCE)
        assert evaluate()
        assert [b.get("status") for b in hook.received] == ["firing", "resolved"]
    finally:
        hook.close()


def test_cli_lists_retries_and_reports_what_remains(tmp_path, monkeypatch, capsys):
    from dw_assets import cli

    home = tmp_path / "home"
    monkeypatch.setenv("DW_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("DW_LANDING_URL", str(tmp_path / "landing"))
    settings = Settings(home=home, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    client, _ = poisoned(settings, tmp_path)
    old = str(tmp_path / "model-DATETIME3.yaml")
    fixed = tmp_path / "model-DATETIME6.yaml"
    model_with(tmp_path, "DATETIME(6)")
    base = ["--home", str(home), "lake", "quarantine"]
    assert cli.main(base + ["list", "--model", old]) == 0
    out = capsys.readouterr().out
    assert client in out and "accounts" in out and "cannot decode" in out and "2 change(s) waiting" in out
    assert cli.main(base + ["retry", "--client", client, "--table", "accounts", "--model", old]) == 2
    assert "still in quarantine" in capsys.readouterr().err
    assert cli.main(base + ["retry", "--client", client, "--model", str(fixed)]) == 0
    assert cli.main(base + ["list", "--client", client, "--model", str(fixed)]) == 0
    assert "0 change(s) waiting" in capsys.readouterr().out
    assert cli.main(base + ["list", "--table", "nope", "--model", str(fixed)]) != 0


def test_every_silver_table_has_a_quarantine_check():
    from dw_assets.defs.checks import _silver_check_defs

    names = {spec.name for d in _silver_check_defs("accounts") for spec in d.check_specs}
    assert "silver_quarantine_empty" in names
