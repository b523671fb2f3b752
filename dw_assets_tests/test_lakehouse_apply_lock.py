"""One apply step per client at a time: a second applier waits for the first, or fails naming the holder."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dw_assets.lakehouse import apply as apply_mod
from dw_assets.lakehouse import apply_lock
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.lakehouse_support import KEYS, account, tiny_model

NO_SOURCE = StaticSourceSchema({})


@pytest.fixture
def feed(tmp_path: Path) -> tuple[Settings, str, LandingFeed]:
    settings = Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / "lake"))
    client = unique_client("al")
    f = LandingFeed(settings, client, KEYS)
    f.write("accounts", f.events("accounts", [("c", account(i)) for i in range(1, 21)]))
    return settings, client, f


def test_concurrent_appliers_of_one_client_run_one_after_the_other(feed, tmp_path, monkeypatch):
    settings, client, f = feed
    model = tiny_model(tmp_path)
    active, peak, lock = [0], [0], threading.Lock()
    real = apply_mod._apply

    def counted(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(apply_mod, "_apply", counted)
    start = threading.Barrier(2)
    results, errors = [], []

    def applier():
        try:
            start.wait()
            results.append(apply_client(settings, client, model, source_schema=NO_SOURCE))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=applier) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert peak[0] == 1  # the second waited for the first
    assert sorted(r.events for r in results) == [0, 20]  # one applied the batch, the other found nothing new
    assert read_delta(settings, "bronze", client, "accounts").num_rows == 20


def test_applier_fails_clearly_while_another_process_holds_the_lock(feed, tmp_path, monkeypatch):
    settings, client, f = feed
    model = tiny_model(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from dw_assets.lakehouse.apply_lock import apply_lock\n"
         "with apply_lock(Path(sys.argv[1]), sys.argv[2]):\n print('held', flush=True); sys.stdin.readline()",
         str(settings.home), client], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(apply_lock, "WAIT_SECONDS", 0.5)
        with pytest.raises(apply_lock.ApplyBusy, match=rf"client '{client}' \(pid {holder.pid},"):
            apply_client(settings, client, model, source_schema=NO_SOURCE)
    finally:
        holder.communicate("\n", timeout=30)
    assert apply_client(settings, client, model, source_schema=NO_SOURCE).events == 20
