"""SCD2 history on its own cadence (the ingest service's `history_interval_s`): batches applied with
`history=False` leave history behind and say so; the next batch with history brings it to exactly what applying
it every batch gives, out-of-order batches, deletes, a re-insert, a TRUNCATE and a quarantined change included,
and the quarantine's discard then reaches both layers alike."""
from __future__ import annotations

from pathlib import Path

from dw_assets.lakehouse.apply import apply_files
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.quarantine_resolve import discard
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account
from dw_assets_tests.test_lakehouse_quarantine import MICROS, model_with

NO_SOURCE = StaticSourceSchema({})
COLUMNS = ["account_id", "displayName", "balance", "is_current", "valid_from", "valid_to", "_dw_seq", "_dw_seq_end"]


def _batches(feed: LandingFeed) -> list[list[dict]]:
    first = feed.events("accounts", [("c", account(1)), ("c", account(2, opened_at=MICROS)), ("c", account(3))])
    second = feed.events("accounts", [("u", account(2, "2.22")), ("u", account(1, "1.11"))])
    third = feed.events("accounts", [("d", {"account_id": 3}), ("c", account(5)), ("u", account(2, "2.50"))])
    fourth = feed.events("accounts", [("c", account(3, "3.00")), ("t", None), ("c", account(4))])
    fifth = feed.events("accounts", [("u", account(4, "4.44")), ("u", account(1, "1.50")), ("d", {"account_id": 4})])
    return [second, first, third, fourth, fifth]  # the first two out of order


def _history(settings: Settings, client: str) -> list[tuple]:
    rows = read_delta(settings, "silver_history", client, "accounts").select(COLUMNS).to_pylist()
    return sorted(tuple(str(r[c]) for c in COLUMNS) for r in rows)


def _silver(settings: Settings, client: str) -> dict[int, str]:
    return {r["account_id"]: str(r["balance"]) for r in read_delta(settings, "silver", client, "accounts").to_pylist()}


def test_deferred_history_catches_up_to_what_every_batch_gives(tmp_path: Path):
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    model = model_with(tmp_path, "DATETIME(3)")  # key 2's create does not decode: quarantined, its update held
    every, deferred = unique_client("hc"), unique_client("hd")
    feeds = {c: LandingFeed(settings, c, KEYS) for c in (every, deferred)}
    batches = {c: _batches(f) for c, f in feeds.items()}
    for i in range(5):
        last = i == 4
        for c in (every, deferred):
            feeds[c].write("accounts", batches[c][i])
            r = apply_files(settings, c, None, model, source_schema=NO_SOURCE, history=c == every or last)
            assert r.ok, r.failed
            assert r.history_behind == ([] if c == every or last else ["accounts"])
        assert _silver(settings, deferred) == _silver(settings, every)  # silver never waits for history
        if i == 0:
            assert _history(settings, deferred) == [] and _history(settings, every)
    assert _history(settings, deferred) == _history(settings, every)
    bad_create = ("2", "name 2", "1.10")  # waits in the quarantine
    assert {r[0] for r in _history(settings, every)} == {"1", "2", "3", "4", "5"}
    assert not {bad_create, ("2", "name 2", "2.50")} & {r[:3] for r in _history(settings, every)}
    for c in (every, deferred):
        discard(settings, c, model, ["accounts"], source_schema=NO_SOURCE)
    assert _history(settings, deferred) == _history(settings, every)
    assert ("2", "name 2", "2.50") in {r[:3] for r in _history(settings, every)}  # the held update, released
