"""The live report server (`dw reports serve`) over silver kept current by the real pipeline: two seeded MariaDB
clients, CDC capture into Tansu and `dw ingest run` landing on moto S3 and applying to silver Delta on S3, running
for the whole module. Per-client tokens (401 without, 403 on another client's page and on the portfolio), the cache
(an unchanged silver costs no query; a change committed in MariaDB costs one run of each report), filters and CSV
equal to the gold tables, and a real Chromium page that shows a change committed in MariaDB within 10 s without a
reload, with figures equal to gold and to the same query in MariaDB.
"""
from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import re
import stat
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from dw_assets import db
from dw_assets.checks.silver_equality import compare_silver_with_source
from dw_assets.model import load_model
from dw_assets.reports.gold import build_client_gold, read_gold
from dw_assets.reports.live.app import build_app
from dw_assets.reports.live.auth import TokenStore, tokens_path
from dw_assets.settings import Settings
from dw_assets.stack import Stack, find_free_port
from dw_assets.stack.s3 import MotoServer
from dw_assets.workload import apply_batch, seed_clients

from .conftest import unique_client
from .fault_harness import ServicePipeline, create_topics, scenario_settings, wait_converged
from .test_reports_support import BILLABLE, IN_BILLABLE, source_query

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def pipeline(stack: Stack, moto_server: MotoServer,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, list[str], ServicePipeline]]:
    """Two seeded clients brought to silver by capture and the ingest service (processes of their own, landing
    and lake in a bucket on the session's moto server); both keep running until the module ends."""
    root = tmp_path_factory.mktemp("live")
    settings = scenario_settings(stack, root / "home", s3_bucket=f"dw-live-{uuid.uuid4().hex[:8]}",
                                 s3_endpoint=moto_server.endpoint_url)
    names = sorted([unique_client("live"), unique_client("live")])
    models = {n: load_model() for n in names}
    logs = root / "logs"
    logs.mkdir()
    p = ServicePipeline(settings, models, {n: None for n in names}, logs)
    try:
        seed_clients(settings, names, rows_per_client=1000, seed=5, replace=True)
        create_topics(settings, models)
        for role in p.roles:
            p.start(role)
        converged, result = wait_converged(p, 120, poll=1.0)
        assert converged, f"the snapshot did not reach silver: {result} {p.exits}"
        yield settings, names, p
    finally:
        p.stop_all(grace=30)


@pytest.fixture(scope="module")
def live(pipeline):
    """The app over the two clients, a token per client plus an operator's."""
    settings, names, _ = pipeline
    store = TokenStore(settings.home)
    tokens = {n: store.add(client=n)[0] for n in names}
    tokens["operator"] = store.add(operator=True)[0]
    app = build_app(settings, clients=lambda: names)
    return settings, names, tokens, app


def wait_silver_equals_source(settings: Settings, client: str, timeout: float = 60) -> None:
    """Until the service has applied every committed change of the client (silver equal to source)."""
    deadline = time.monotonic() + timeout
    while not all(r.equal for r in compare_silver_with_source(settings, client, load_model())):
        assert time.monotonic() < deadline, f"{client}: silver did not catch up with the source"
        time.sleep(0.5)


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
        apply_batch(settings, a, seed=3, rows=5)  # one transaction in MariaDB; the pipeline brings it to silver
        wait_silver_equals_source(settings, a)
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
        # The range presets end at the data's newest day and keep the other filters: "last 7 days" of one currency.
        newest = max(dates)
        latest = next(g["currency"] for g in gold if g["order_date"] == newest)
        page = http.get(f"/clients/{a}", params={"currency": latest}, headers=bearer(tokens[a])).text
        [query] = re.findall(r'<a data-days="7" href="\?([^"]+)"', page)
        r = http.get(f"/clients/{a}/daily_revenue.csv?{html.unescape(query)}", headers=bearer(tokens[a]))
        week = {(str(g["order_date"]), g["currency"]) for g in gold
                if newest - timedelta(days=6) <= g["order_date"] and g["currency"] == latest}
        assert week and {(x["order_date"], x["currency"]) for x in csv_rows(r.text)} == week


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


ROWS_JS = """JSON.stringify({key: document.body.dataset.key, newest: Number(document.getElementById('newest').dataset.ms),
  rows: [...document.querySelectorAll('#daily_revenue tbody tr')].map(tr => [...tr.cells].map(td => td.textContent))})"""


def page_state(browser: Browser) -> tuple[str, int, dict[tuple[str, str], tuple[int, Decimal]]]:
    """The page's snapshot key, its newest source change (ms) and its daily revenue rows: (day, currency) ->
    (orders, revenue) as displayed."""
    state = json.loads(browser.evaluate(ROWS_JS))
    figures = {(r[0], r[1]): (int(r[2].replace(",", "")), Decimal(r[3].replace(",", ""))) for r in state["rows"]}
    return state["key"], state["newest"], figures


def mariadb_daily_revenue(settings: Settings, client: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """daily_revenue's orders and revenue per day and currency, computed by MariaDB over the source tables."""
    rows = source_query(settings, client, f"""SELECT DATE(ordered_at), currency, COUNT(*),
        SUM(total_amount - discount_amount) FROM orders WHERE status {IN_BILLABLE}
        GROUP BY DATE(ordered_at), currency""", BILLABLE)
    return {(str(d), cur): (int(n), Decimal(rev)) for d, cur, n, rev in rows}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_browser_page_shows_committed_change_within_10_s(live, server):
    assert CHROMIUM.exists(), "headless Chromium is needed at /usr/bin/chromium: `apt-get install -y chromium`"
    settings, (a, _), tokens, app = live
    day = "2031-01-01"  # after every seeded order: the page's first rows once it arrives
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
            key0, newest0, figures = page_state(browser)
            assert figures and not any(d == day for d, _ in figures)
            # A reload would drop this mark and add a navigation entry: neither may happen.
            browser.evaluate("window.__dw_no_reload = 1")
            navigations = browser.evaluate("performance.getEntriesByType('navigation').length")

            [(order_id,)] = source_query(settings, a, f"SELECT min(order_id) FROM orders WHERE status {IN_BILLABLE}",
                                         BILLABLE)
            with db.connection(settings, database=a) as conn, conn.cursor() as cur:
                cur.execute("UPDATE orders SET ordered_at = %s WHERE order_id = %s", (f"{day} 10:00:00", order_id))
                conn.commit()
            committed, committed_ms = time.monotonic(), int(time.time() * 1000)
            # Nothing else runs here: capture, Tansu, the ingest service on S3 and the page's polling bring it.
            while True:
                key, newest, figures = page_state(browser)
                if any(d == day for d, _ in figures):
                    break
                assert time.monotonic() - committed < 10, "the change did not reach the open page within 10 s"
                time.sleep(0.2)
            seconds = time.monotonic() - committed
            assert key != key0
            assert browser.evaluate("window.__dw_no_reload") == 1
            assert browser.evaluate("performance.getEntriesByType('navigation').length") == navigations
            # The "newest source change" tile moved to the commit (binlog timestamps have whole seconds).
            assert newest > newest0 and newest >= committed_ms - 1000
            browser.call("Page.captureScreenshot")  # the page renders (charts included) without errors
        finally:
            browser.close()
    wait_silver_equals_source(settings, a)  # the same source state on every side compared below
    source = mariadb_daily_revenue(settings, a)
    build_client_gold(settings, a, ["daily_revenue"])
    gold = {(str(g["order_date"]), g["currency"]): (g["orders"], g["revenue"])
            for g in read_gold(settings, a, "daily_revenue").table.to_pylist()}
    assert gold == source  # the whole report, every day and currency
    assert figures == {k: gold[k] for k in figures}  # each row the page shows
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
