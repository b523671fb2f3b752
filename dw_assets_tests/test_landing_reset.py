"""A broker that loses its log: landing stops with a clear error instead of adopting old files, the recovery
command makes landing and the lake exact again; outages and a stuck flush are ridden out or bounded.

Each test runs its own Tansu broker (memory storage) so that it can restart it without touching the session's.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import pytest

from dw_assets.cdc.capture import CaptureError, CaptureOptions, CaptureService
from dw_assets.cdc.sources import fixed_source
from dw_assets.lakehouse.apply import apply_client
from dw_assets.landing import land_client, open_store
from dw_assets.landing.incarnation import LandingReset
from dw_assets.landing.recovery import recover_client
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack import find_free_port
from dw_assets.stack.broker import TansuBroker
from dw_assets.workload import apply_batch, seed_clients
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.test_cdc_support import master_position
from dw_assets_tests.pipeline_support import assert_silver_equals_source


class Broker:
    """A private Tansu that a test may kill and start again on the same port."""

    def __init__(self, base: Path):
        self.tansu = TansuBroker(base, find_free_port())
        self.pid: int | None = self.tansu.start()

    def restart(self) -> None:
        self.stop()
        self.pid = self.tansu.start()

    def stop(self) -> None:
        self.tansu.stop(self.pid)
        self.pid = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def settings(stack_settings: Settings, broker: Broker, tmp_path: Path) -> Settings:
    return replace(stack_settings, home=tmp_path / "home", landing_url=str(tmp_path / "landing"),
                   lake_url=str(tmp_path / "lake"), kafka=replace(stack_settings.kafka, bootstrap=broker.tansu.bootstrap))


def _capture_once(settings: Settings, client: str, **kw) -> CaptureService:
    service = CaptureService(settings, CaptureOptions(once=True, databases=fixed_source(settings, {client}),
                                                      heartbeat_interval_ms=200, stats_interval_s=60, **kw))
    service.run()
    return service


def _landed_keys(settings: Settings) -> dict[str, dict[str, str] | None]:
    store = open_store(settings)
    return {k: store.head(k) for k in store.list("topics/")}


def test_memory_broker_restart_stops_landing_then_recover_makes_the_lake_exact(settings, broker):
    client = unique_client("rst")
    model = load_model()
    seed_clients(settings, [client], rows_per_client=200, seed=3)
    _capture_once(settings, client)  # snapshot
    apply_batch(settings, client, seed=1, rows=40)
    _capture_once(settings, client)
    land_client(settings, client)
    assert apply_client(settings, client).ok
    assert_silver_equals_source(settings, client, model)

    # Captured and acknowledged, never landed: these die with the broker.
    apply_batch(settings, client, seed=2, rows=40)
    _capture_once(settings, client)
    broker.restart()
    # Capture goes on into the new, empty broker: the same offsets now hold different events.
    apply_batch(settings, client, seed=3, rows=40)
    _capture_once(settings, client)

    before = _landed_keys(settings)
    with pytest.raises(LandingReset) as err:
        land_client(settings, client)
    message = str(err.value)
    assert f"dw landing recover --client {client}" in message and f".{client}." in message
    assert _landed_keys(settings) == before  # nothing adopted, nothing overwritten

    report = recover_client(settings, client)
    assert report.replay_from and not report.resnapshot
    assert sorted(report.archived) == sorted(before)
    archived = open_store(settings).list("archive/")
    assert len(archived) == len(before)  # moved, not deleted

    _capture_once(settings, client)  # re-emits the client's lost changes from the binlog
    land = land_client(settings, client)
    assert land.complete and not land.adopted
    result = apply_client(settings, client)
    assert result.ok, result.failed
    assert_silver_equals_source(settings, client, model)

    # Business as usual afterwards.
    apply_batch(settings, client, seed=4, rows=40)
    _capture_once(settings, client)
    land_client(settings, client)
    assert apply_client(settings, client).ok
    assert_silver_equals_source(settings, client, model)


def test_flush_against_a_dead_broker_gives_up_with_a_message_and_keeps_the_checkpoint(settings, broker):
    client = unique_client("fl")
    seed_clients(settings, [client], rows_per_client=50, seed=5)
    service = CaptureService(settings, CaptureOptions(databases=fixed_source(settings, {client}),
                                                      heartbeat_interval_ms=200, stats_interval_s=60,
                                                      flush_timeout_s=3.0))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            service.run()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            failure.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    checkpoint = service.store
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (checkpoint.load() and
                                               checkpoint.load().databases.get(client) == "streaming"):
        time.sleep(0.2)
    broker.stop()
    before_batch = master_position(settings)
    apply_batch(settings, client, seed=6, rows=20)
    thread.join(60)
    assert not thread.is_alive(), "capture hung waiting for the broker"
    assert failure and isinstance(failure[0], CaptureError)
    assert re.search(r"did not acknowledge \d+ messages within 3 s; the checkpoint stays at", str(failure[0]))
    saved = checkpoint.load()
    assert (int(saved.file.rsplit(".", 1)[1]), saved.pos) <= (int(before_batch[0].rsplit(".", 1)[1]), before_batch[1])
