"""The live report server (`dw reports serve`) over real silver tables of seeded MariaDB clients: per-client
tokens (401 without, 403 on another client's page and on the portfolio), the cache (an unchanged silver costs no
query), filters and CSV equal to the gold tables, and a real Chromium page that shows a change committed in
MariaDB within 10 s without a reload.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import httpx

from dw_assets.reports.gold import build_client_gold, read_gold
from dw_assets.reports.live.app import build_app
from dw_assets.reports.live.auth import TokenStore, tokens_path
from dw_assets.settings import Settings
from dw_assets.stack import find_free_port
from dw_assets.workload import seed_clients

from .conftest import unique_client
from .test_reports_support import build_silver_from_source, source_query

CHROMIUM = Path("/usr/bin/chromium")
BILLABLE = "('paid', 'shipped', 'delivered')"


@pytest.fixture(scope="module")
def live(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory):
    """Two seeded clients with silver, the app over them and a token per client plus an operator's."""
    root = tmp_path_factory.mktemp("live")
    settings = replace(stack_settings, home=root / "home", lake_url=str(root / "lake"),
                       reports_dir=str(root / "reports"))
    names = sorted([unique_client("live"), unique_client("live")])
    seed_clients(settings, names, rows_per_client=2000, seed=5)
    for name in names:
        build_silver_from_source(settings, name)
    store = TokenStore(settings.home)
    tokens = {n: store.add(client=n)[0] for n in names}
    tokens["operator"] = store.add(operator=True)[0]
    app = build_app(settings, clients=lambda: names)
    return settings, names, tokens, app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_see_only_their_client(live, server):
    settings, (a, b), tokens, app = live
    with httpx.Client(base_url=server, timeout=60) as http:
        r = http.get(f"/clients/{a}")
        assert r.status_code == 401 and "Sign in required" in r.text and "daily_revenue" not in r.text
        assert http.get(f"/clients/{a}", headers=bearer(tokens[a] + "x")).status_code == 401
        assert http.get(f"/clients/{a}", headers=bearer("dwr_00000000_guess")).status_code == 401
        for path in (f"/clients/{b}", "/portfolio", f"/api/versions/clients/{b}", f"/clients/{b}/daily_revenue.csv",
                     f"/clients/{b}/daily_revenue.svg", "/portfolio/daily_revenue.csv", "/clients/someone_else"):
            r = http.get(path, headers=bearer(tokens[a]))
            assert r.status_code == 403, path
            assert "revenue_7d" not in r.text and "<table" not in r.text, path  # a page about access, no data
        own = http.get(f"/clients/{a}", headers=bearer(tokens[a]))
        assert own.status_code == 200 and 'id="daily_revenue"' in own.text
        assert http.get("/portfolio", headers=bearer(tokens["operator"])).status_code == 200
        assert http.get(f"/clients/{b}", headers=bearer(tokens["operator"])).status_code == 200
        # Signing in through the form sets a cookie that then opens the client's page (and only it).
        r = http.post("/login", data={"token": tokens[b], "next": f"/clients/{b}"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/clients/{b}"
        assert http.get(f"/clients/{b}").status_code == 200 and http.get(f"/clients/{a}").status_code == 403
    text = tokens_path(settings.home).read_text()
    assert all(t.split("_", 2)[2] not in text for t in tokens.values())  # only salted hashes are stored
    assert stat.S_IMODE(os.stat(tokens_path(settings.home)).st_mode) == 0o600


def test_unchanged_silver_runs_no_query(live, server):
    settings, (a, _), tokens, app = live
    cache = app.state.live.cache
    with httpx.Client(base_url=server, timeout=60) as http:
        assert http.get(f"/clients/{a}", headers=bearer(tokens[a])).status_code == 200
        before = cache.queries
        for path in (f"/clients/{a}", f"/clients/{a}?fragment=1", f"/clients/{a}/daily_revenue.csv",
                     f"/clients/{a}/daily_revenue.svg", f"/clients/{a}/top_products.svg?currency=EUR",
                     f"/clients/{a}?from=2024-01-01", f"/api/versions/clients/{a}"):
            assert http.get(path, headers=bearer(tokens[a])).status_code == 200, path
        assert cache.queries == before, "a page over unchanged silver ran report queries"
        key = http.get(f"/api/versions/clients/{a}", headers=bearer(tokens[a])).json()["key"]
        build_silver_from_source(settings, a)  # a new Delta version of every silver table
        assert http.get(f"/api/versions/clients/{a}", headers=bearer(tokens[a])).json()["key"] != key
        assert http.get(f"/clients/{a}", headers=bearer(tokens[a])).status_code == 200
        assert cache.queries == before + len(cache.specs())  # one run of each report, then cached again
        assert http.get(f"/clients/{a}", headers=bearer(tokens[a])).status_code == 200
        assert cache.queries == before + len(cache.specs())


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_filtered_csv_equals_gold_rows_in_range(live, server):
    settings, (a, _), tokens, app = live
    gold = {r.name: r for r in build_client_gold(settings, a)}["daily_revenue"].table.to_pylist()
    currency = sorted({r["currency"] for r in gold})[0]
    dates = sorted({r["order_date"] for r in gold})
    lo, hi = dates[len(dates) // 4], dates[len(dates) // 2]
    with httpx.Client(base_url=server, timeout=60) as http:
        r = http.get(f"/clients/{a}/daily_revenue.csv?from={lo}&to={hi}&currency={currency}",
                     headers=bearer(tokens[a]))
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        got = {(x["order_date"], x["currency"]): (int(x["orders"]), Decimal(x["revenue"])) for x in csv_rows(r.text)}
        expected = {(str(g["order_date"]), g["currency"]): (g["orders"], g["revenue"]) for g in gold
                    if lo <= g["order_date"] <= hi and g["currency"] == currency}
        assert len(expected) > 5 and got == expected
        full = {(x["order_date"], x["currency"]) for x in csv_rows(
            http.get(f"/clients/{a}/daily_revenue.csv", headers=bearer(tokens[a])).text)}
        assert full == {(str(g["order_date"]), g["currency"]) for g in gold}
        # Values are bound parameters: SQL in a filter value matches nothing instead of everything.
        r = http.get(f"/clients/{a}/daily_revenue.csv", params={"currency": "x' OR '1'='1"},
                     headers=bearer(tokens[a]))
        assert r.status_code == 200 and csv_rows(r.text) == []
        r = http.get(f"/clients/{a}?from=2024-13-01", headers=bearer(tokens[a]))
        assert r.status_code == 400 and "is not a date" in r.text


# ---- the browser ------------------------------------------------------------------------------------------

class Browser:
    """Headless Chromium driven over the DevTools protocol (websockets, which uvicorn brings)."""

    def __init__(self, profile: str):
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and self.proc.poll() is None, "Chromium did not start"
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t["type"] == "page")
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self._id = 0

    def call(self, method: str, **params: object) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self._id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def server(live):
    import uvicorn

    port = find_free_port()
    srv = uvicorn.Server(uvicorn.Config(live[3], host="127.0.0.1", port=port, access_log=False, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


ROWS_JS = """JSON.stringify({key: document.body.dataset.key, status: document.getElementById('status').textContent,
  rows: [...document.querySelectorAll('#daily_revenue tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))})"""


def page_figure(browser: Browser, day: str) -> tuple[str, list[str] | None]:
    state = json.loads(browser.evaluate(ROWS_JS))
    row = next((r for r in state["rows"] if r[0] == day), None)
    return state["key"], row


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_page_shows_committed_change_within_10_s(live, server):
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed (/usr/bin/chromium): `apt-get install -y chromium`")
    settings, (a, _), tokens, app = live
    day = "2031-01-01"  # after every seeded order: the page's first row once it arrives
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(profile)
        try:
            browser.call("Network.enable")
            browser.call("Network.setExtraHTTPHeaders", headers=bearer(tokens[a]))
            browser.call("Page.enable")
            browser.call("Page.navigate", url=f"{server}/clients/{a}")
            deadline = time.monotonic() + 60
            while browser.evaluate("document.readyState") != "complete" or not browser.evaluate(
                    "!!document.getElementById('daily_revenue')"):
                assert time.monotonic() < deadline, "page did not load"
                time.sleep(0.2)
            key0, row = page_figure(browser, day)
            assert row is None
            navigations = browser.evaluate("performance.getEntriesByType('navigation').length")

            [(order_id,)] = source_query(settings, a, f"SELECT min(order_id) FROM orders WHERE status IN {BILLABLE}")
            from dw_assets import db

            with db.connection(settings, database=a) as conn, conn.cursor() as cur:
                cur.execute("UPDATE orders SET ordered_at = %s WHERE order_id = %s", (f"{day} 10:00:00", order_id))
                conn.commit()
            committed = time.monotonic()
            build_silver_from_source(settings, a)  # the test's apply step: source -> new silver versions
            while True:
                key, row = page_figure(browser, day)
                if row is not None:
                    break
                assert time.monotonic() - committed < 10, "the change did not reach the open page within 10 s"
                time.sleep(0.2)
            seconds = time.monotonic() - committed
            assert key != key0
            assert browser.evaluate("performance.getEntriesByType('navigation').length") == navigations
            browser.call("Page.captureScreenshot")  # the page renders (charts included) without errors
        finally:
            browser.close()
    [(n, revenue)] = source_query(settings, a, f"""SELECT COUNT(*), SUM(total_amount - discount_amount) FROM orders
        WHERE DATE(ordered_at) = '{day}' AND status IN {BILLABLE}""")
    assert (int(row[2].replace(",", "")), Decimal(row[3].replace(",", ""))) == (n, revenue)
    build_client_gold(settings, a, ["daily_revenue"])
    gold = [r for r in read_gold(settings, a, "daily_revenue").table.to_pylist() if r["order_date"] == date(2031, 1, 1)]
    assert [(g["orders"], g["revenue"]) for g in gold] == [(n, revenue)]
    print(f"change visible on the open page {seconds:.1f} s after the commit")


def test_demo_starts_the_server_and_its_operator_token_opens_it(stack_settings: Settings, tmp_path: Path):
    from dw_assets.demo.live_reports import LiveReportsServer

    settings = stack_settings  # the subprocess reads the stack's state file, as in `dw demo`
    server = LiveReportsServer.start(settings, tmp_path, say=lambda _: None)
    try:
        token = server.token_file.read_text().strip()
        assert stat.S_IMODE(os.stat(server.token_file).st_mode) == 0o600
        assert TokenStore(settings.home).verify(token).role == "operator"
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/").status_code == 401
            assert http.get("/", headers=bearer(token)).status_code == 200
        assert token not in server.log_file.read_text()
    finally:
        assert server.stop()
