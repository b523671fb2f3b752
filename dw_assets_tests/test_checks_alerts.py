"""Alerts: one webhook call per new difference, one when it resolves, and a slow webhook never fails a check."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from dw_assets.checks import alerts
from dw_assets.checks.conformance import production_conformance
from dw_assets.identifiers import quote_qualified
from dw_assets_tests.test_checks_schema import execute, make_client


class Webhook:
    """A local HTTP endpoint recording JSON bodies; `delay` makes it slower than the sender's timeout."""

    def __init__(self, delay: float = 0.0):
        received, self.delay = [], delay
        self.received: list[dict] = received
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay)
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    w = Webhook()
    yield w
    w.close()


def evaluate(settings, client: str, config: alerts.AlertConfig) -> alerts.AlertOutcome:
    """What the Dagster check does: compute the breaking differences and hand them to alerting."""
    res = production_conformance(settings, client)
    return alerts.process_findings(settings, client, "production_conforms_to_model",
                                   alerts.findings_from_differences(res.breaking, "ERROR"), config)


def test_one_alert_per_new_difference_and_one_resolved_message(stack_settings, webhook):
    client = make_client(stack_settings, "al")
    config = alerts.AlertConfig(webhook_url=webhook.url, timeout_seconds=2, retries=0)
    evaluate(stack_settings, client, config)
    assert webhook.received == []  # conforming: nothing to say

    table = quote_qualified(client, "orders")
    execute(stack_settings, f"ALTER TABLE {table} MODIFY COLUMN `total_amount` DECIMAL(8,2) NOT NULL")
    for _ in range(3):  # re-evaluation of the same difference does not alert again
        evaluate(stack_settings, client, config)
    assert [(m["status"], m["client"], m["check"], m["severity"]) for m in webhook.received] == \
        [("firing", client, "production_conforms_to_model", "ERROR")]
    assert "total_amount" in webhook.received[0]["summary"]
    assert webhook.received[0]["details"]["ddl"].startswith(f"ALTER TABLE {table} MODIFY COLUMN")

    # A second, different difference is a new alert; the first one stays quiet.
    execute(stack_settings, f"ALTER TABLE {quote_qualified(client, 'payments')} DROP COLUMN `raw_response`")
    evaluate(stack_settings, client, config)
    assert len(webhook.received) == 2 and "raw_response" in webhook.received[1]["summary"]

    execute(stack_settings, f"ALTER TABLE {table} MODIFY COLUMN `total_amount` DECIMAL(12,2) NOT NULL")
    evaluate(stack_settings, client, config)
    evaluate(stack_settings, client, config)
    assert [m["status"] for m in webhook.received] == ["firing", "firing", "resolved"]
    assert webhook.received[2]["fingerprint"] == webhook.received[0]["fingerprint"]
    assert [a["summary"] for a in alerts.open_alerts(stack_settings, client)] == [webhook.received[1]["summary"]]


def test_a_webhook_that_times_out_does_not_fail_the_check_and_is_retried_later(stack_settings):
    slow = Webhook(delay=1.5)
    try:
        client = make_client(stack_settings, "al")
        execute(stack_settings, f"DROP TABLE {quote_qualified(client, 'invoices')}")
        config = alerts.AlertConfig(webhook_url=slow.url, timeout_seconds=0.3, retries=1)
        started = time.monotonic()
        out = evaluate(stack_settings, client, config)  # no exception
        assert out.failed and not out.fired and time.monotonic() - started < 5
        # The next evaluation tries again (the store did not mark it sent); a fast endpoint then gets it once.
        slow.delay = 0
        out = evaluate(stack_settings, client, config)
        assert len(out.fired) == 1
        evaluate(stack_settings, client, config)
        assert sum(1 for m in slow.received if m["status"] == "firing") >= 1
        assert alerts.open_alerts(stack_settings, client)[0]["notified_at"] is not None
    finally:
        slow.close()


def test_unreachable_store_or_webhook_never_raises(stack_settings):
    config = alerts.AlertConfig(webhook_url="http://127.0.0.1:9/none", timeout_seconds=0.2, retries=0)
    broken = stack_settings.with_overrides(control_db="x" * 80)  # an invalid identifier: the store fails
    out = alerts.process_findings(broken, "c_x", "chk", [alerts.Finding("f", "ERROR", "s")], config)
    assert out == alerts.AlertOutcome()


def test_slack_payload_shape():
    p = alerts.alert_payload("acme", "staging_matches_production",
                             alerts.Finding("abc", "WARN", "extra_column orders.channel"), "firing", "slack")
    assert "acme" in p["text"] and "extra_column orders.channel" in p["text"]
    assert p["blocks"][0]["type"] == "section" and ":warning:" in p["blocks"][0]["text"]["text"]
