"""Alerts for check findings: one per (client, check, finding) when it appears and one when it resolves.

State lives in the control database (`<control_db>.check_alerts`), so de-duplication survives restarts and
works across concurrent evaluations: a conditional UPDATE claims each notification, and a failed send is
un-claimed so a later evaluation retries it. A webhook that times out never fails the check that found it.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Literal

from dw_assets import db
from dw_assets.identifiers import quote_ident
from dw_assets.settings import Settings

from .schema_diff import Difference

log = logging.getLogger(__name__)

PayloadFormat = Literal["json", "slack"]


@dataclass(frozen=True)
class Finding:
    """One thing a check reports; `fingerprint` identifies the change (same change -> same fingerprint)."""

    fingerprint: str
    severity: str  # "ERROR" or "WARN" (the check's severity)
    summary: str  # one line
    details: dict[str, Any] = field(default_factory=dict)


def findings_from_differences(diffs: Iterable[Difference], severity: str) -> list[Finding]:
    out = []
    for d in diffs:
        where = f"{d.table}.{d.column}" if d.column else d.table
        change = f" {d.old} -> {d.new}" if (d.old or d.new) else ""
        out.append(Finding(d.fingerprint, severity, f"{d.kind} {where}{change} ({d.severity})", d.as_dict()))
    return out


@dataclass(frozen=True)
class AlertConfig:
    webhook_url: str | None = None
    payload_format: PayloadFormat = "json"
    timeout_seconds: float = 5.0
    retries: int = 2  # extra attempts after the first, with a short backoff

    @classmethod
    def from_settings(cls, settings: Settings) -> "AlertConfig":
        fmt = settings.alert_payload_format
        return cls(webhook_url=settings.alert_webhook_url, payload_format="slack" if fmt == "slack" else "json")


# ---- payloads and delivery --------------------------------------------------------------------------------


def alert_payload(client: str, check: str, finding: Finding, status: Literal["firing", "resolved"],
                  fmt: PayloadFormat = "json") -> dict[str, Any]:
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if fmt == "slack":
        icon = ":white_check_mark:" if status == "resolved" else (":red_circle:" if finding.severity == "ERROR"
                                                                   else ":warning:")
        head = f"{icon} *{status.upper()}* `{check}` for client `{client}` ({finding.severity})"
        return {"text": f"{head}: {finding.summary}",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": head}},
                           {"type": "section", "text": {"type": "mrkdwn", "text": finding.summary}},
                           {"type": "context", "elements": [{"type": "mrkdwn",
                                                             "text": f"fingerprint {finding.fingerprint} · {at}"}]}]}
    return {"event": "dw.check", "status": status, "client": client, "check": check,
            "severity": finding.severity, "fingerprint": finding.fingerprint, "summary": finding.summary,
            "details": finding.details, "at": at}


def post_json(url: str, payload: dict[str, Any], timeout_seconds: float, retries: int,
              sleep: Callable[[float], None] = time.sleep) -> bool:
    """POST `payload`; True on a 2xx. Retries timeouts, connection errors and 5xx; never raises."""
    body = json.dumps(payload, default=str).encode()
    for attempt in range(retries + 1):
        req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_seconds) as resp:
                if 200 <= resp.status < 300:
                    return True
                log.warning("alert webhook answered HTTP %s", resp.status)
        except urllib.error.HTTPError as e:
            log.warning("alert webhook answered HTTP %s", e.code)
            if e.code < 500:
                return False  # a client error will not fix itself by retrying
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            log.warning("alert webhook failed (attempt %d/%d): %s", attempt + 1, retries + 1, e)
        if attempt < retries:
            sleep(0.5 * 2 ** attempt)
    return False


# ---- durable de-duplication -------------------------------------------------------------------------------


def _table(settings: Settings) -> str:
    return f"{quote_ident(settings.control_db)}.`check_alerts`"


def ensure_alert_store(settings: Settings) -> None:
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(settings.control_db)} "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        cur.execute(f"""CREATE TABLE IF NOT EXISTS {_table(settings)} (
              `client` VARCHAR(64) NOT NULL,
              `check_name` VARCHAR(128) NOT NULL,
              `fingerprint` VARCHAR(64) NOT NULL,
              `severity` VARCHAR(16) NOT NULL,
              `summary` TEXT NOT NULL,
              `details` LONGTEXT NULL,
              `first_seen` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              `last_seen` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
              `notified_at` DATETIME(6) NULL,
              `resolved_at` DATETIME(6) NULL,
              `resolved_notified_at` DATETIME(6) NULL,
              PRIMARY KEY (`client`, `check_name`, `fingerprint`),
              KEY `ix_open` (`client`, `check_name`, `resolved_at`)
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4""")


@dataclass
class AlertOutcome:
    fired: list[str] = field(default_factory=list)  # fingerprints notified as firing in this evaluation
    resolved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # deliveries that failed (retried next evaluation)


def process_findings(settings: Settings, client: str, check: str, findings: list[Finding],
                     config: AlertConfig | None = None) -> AlertOutcome:
    """Record the check's current findings and send what is new or resolved since the last evaluation.

    Never raises for delivery or store problems: alerting must not turn a check result into a crash.
    """
    config = config or AlertConfig.from_settings(settings)
    try:
        return _process(settings, client, check, findings, config)
    except Exception:  # noqa: BLE001 - the store being down must not fail the check run
        log.exception("alert processing failed for %s/%s", client, check)
        return AlertOutcome()


def _process(settings: Settings, client: str, check: str, findings: list[Finding], config: AlertConfig
             ) -> AlertOutcome:
    ensure_alert_store(settings)
    t = _table(settings)
    current = {f.fingerprint: f for f in findings}
    with db.connection(settings) as conn, conn.cursor() as cur:
        for f in findings:
            # A fingerprint that resolved earlier and is back counts as new again.
            cur.execute(
                f"INSERT INTO {t} (`client`, `check_name`, `fingerprint`, `severity`, `summary`, `details`) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE `last_seen` = CURRENT_TIMESTAMP(6), "
                "`severity` = VALUES(`severity`), "
                "`notified_at` = IF(`resolved_at` IS NULL, `notified_at`, NULL), "
                "`resolved_notified_at` = IF(`resolved_at` IS NULL, `resolved_notified_at`, NULL), "
                "`resolved_at` = NULL",
                (client, check, f.fingerprint, f.severity, f.summary, json.dumps(f.details, default=str)))
        cur.execute(f"SELECT `fingerprint` FROM {t} WHERE `client` = %s AND `check_name` = %s "
                    "AND `resolved_at` IS NULL", (client, check))
        for (fp,) in cur.fetchall():
            if fp not in current:
                cur.execute(f"UPDATE {t} SET `resolved_at` = CURRENT_TIMESTAMP(6) WHERE `client` = %s "
                            "AND `check_name` = %s AND `fingerprint` = %s AND `resolved_at` IS NULL",
                            (client, check, fp))
        # Everything still owed a notification, including sends that failed in earlier evaluations.
        cur.execute(f"SELECT `fingerprint`, `severity`, `summary`, `details`, `resolved_at` IS NOT NULL "
                    f"FROM {t} WHERE `client` = %s AND `check_name` = %s AND ((`resolved_at` IS NULL AND "
                    "`notified_at` IS NULL) OR (`resolved_at` IS NOT NULL AND `notified_at` IS NOT NULL AND "
                    "`resolved_notified_at` IS NULL))", (client, check))
        owed = cur.fetchall()
        out = AlertOutcome()
        for fp, severity, summary, details, is_resolved in owed:
            column = "resolved_notified_at" if is_resolved else "notified_at"
            # Claim: only one concurrent evaluation gets rowcount 1 and sends.
            claimed = cur.execute(f"UPDATE {t} SET {quote_ident(column)} = CURRENT_TIMESTAMP(6) WHERE `client` = %s "
                                  f"AND `check_name` = %s AND `fingerprint` = %s AND {quote_ident(column)} IS NULL",
                                  (client, check, fp))
            if claimed != 1:
                continue
            finding = current.get(fp) or Finding(fp, severity, summary, json.loads(details or "{}"))
            status: Literal["firing", "resolved"] = "resolved" if is_resolved else "firing"
            if _deliver(client, check, finding, status, config):
                (out.resolved if is_resolved else out.fired).append(fp)
            else:
                cur.execute(f"UPDATE {t} SET {quote_ident(column)} = NULL WHERE `client` = %s AND "
                            "`check_name` = %s AND `fingerprint` = %s", (client, check, fp))
                out.failed.append(fp)
    return out


def _deliver(client: str, check: str, finding: Finding, status: Literal["firing", "resolved"],
             config: AlertConfig) -> bool:
    level = logging.INFO if status == "resolved" else (logging.ERROR if finding.severity == "ERROR"
                                                        else logging.WARNING)
    log.log(level, "[%s] %s client=%s: %s (fingerprint %s)", status.upper(), check, client, finding.summary,
            finding.fingerprint)
    if not config.webhook_url:
        return True  # the log line is the alert
    payload = alert_payload(client, check, finding, status, config.payload_format)
    return post_json(config.webhook_url, payload, config.timeout_seconds, config.retries)


def open_alerts(settings: Settings, client: str | None = None) -> list[dict[str, Any]]:
    """Unresolved findings (for reports and tests)."""
    ensure_alert_store(settings)
    sql = (f"SELECT `client`, `check_name`, `fingerprint`, `severity`, `summary`, `first_seen`, `notified_at` "
           f"FROM {_table(settings)} WHERE `resolved_at` IS NULL")
    args: tuple = ()
    if client:
        sql += " AND `client` = %s"
        args = (client,)
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(sql + " ORDER BY `client`, `check_name`, `fingerprint`", args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
