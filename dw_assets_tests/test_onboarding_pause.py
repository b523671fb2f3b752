"""With a continuous capture service running: onboarding lets the service snapshot the client, and pausing one
client stops its capture while the other client's changes keep flowing; resuming snapshots it again."""
from __future__ import annotations

import pytest

import threading
import time

from dw_assets.cdc.capture import CaptureOptions, CaptureService
from dw_assets.cdc.topics import end_offsets
from dw_assets.onboarding.client_snapshot import is_snapshotted
from dw_assets.onboarding.kafka_topics import client_topic_names
from dw_assets.onboarding.lifecycle import pause_client, resume_client
from dw_assets.onboarding.onboard import onboard_client
from dw_assets.workload import apply_batch
from dw_assets_tests.test_onboarding_support import Sandbox, sandbox  # noqa: F401 - fixture

# Each of these onboards clients end to end (tens of seconds): outside the quick subset.
pytestmark = pytest.mark.slow


def _messages(settings, client: str) -> int:
    return sum(sum(p.values()) for p in end_offsets(settings, client_topic_names(settings, client)).values())


def _wait(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_pause_stops_capture_of_one_client_only(sandbox: Sandbox):
    s = sandbox.settings
    paused, other = sandbox.seed(rows=150, n=2)
    service = CaptureService(s, CaptureOptions(registry_poll_s=0.5, stats_interval_s=60, heartbeat_interval_ms=1000))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        assert _wait(lambda: service.lock.holder_pid() is not None, 10)
        for c in (paused, other):
            r = onboard_client(s, c, run_by="test", snapshot_timeout_s=60)
            assert r.steps[5].detail["mode"].startswith("continuous service")

        change = pause_client(s, paused, changed_by="test")
        assert change.capture_released  # the service dropped the database within its registry poll
        before = {c: _messages(s, c) for c in (paused, other)}
        for i in range(3):
            apply_batch(s, paused, seed=i, rows=20)
            apply_batch(s, other, seed=i, rows=20)
        assert _wait(lambda: _messages(s, other) > before[other])
        time.sleep(1.5)  # several registry polls and heartbeats: nothing of the paused client may appear
        assert _messages(s, paused) == before[paused]

        resume_client(s, paused, changed_by="test")
        assert _wait(lambda: is_snapshotted(s, paused) and _messages(s, paused) > before[paused])
    finally:
        service.stop()
        thread.join(30)
