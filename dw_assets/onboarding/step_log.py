"""The durable record of onboarding progress: one row per (client, step) in the control database.

A step is `started` before its work and `done` after it, so a re-run skips done steps and knows which step an
interrupted attempt was in; offboarding clears the rows so that a later onboarding starts from the top.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pymysql

from dw_assets import db
from dw_assets.identifiers import quote_ident, validate_client_name
from dw_assets.settings import Settings

from .registry import ensure_registry


@dataclass(frozen=True)
class StepRecord:
    client: str
    step: str
    state: str  # started | done | failed
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    run_by: str
    detail: dict[str, Any]

    @property
    def done(self) -> bool:
        return self.state == "done"


def _table(settings: Settings) -> str:
    return f"{quote_ident(settings.control_db)}.`onboarding_steps`"


def step_records(settings: Settings, client: str) -> dict[str, StepRecord]:
    """step -> its record, for one client."""
    validate_client_name(client)
    ensure_registry(settings)
    with db.connection(settings) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT `client`, `step`, `state`, `attempt`, `started_at`, `finished_at`, `seconds`, `run_by`, "
                    f"`detail` FROM {_table(settings)} WHERE `client` = %s", (client,))
        rows = cur.fetchall()
    return {r["step"]: StepRecord(**{**r, "detail": json.loads(r["detail"]) if r["detail"] else {}}) for r in rows}


def records_by_client(settings: Settings) -> dict[str, dict[str, StepRecord]]:
    """Every client's step records in one query (for the registry sensor)."""
    ensure_registry(settings)
    with db.connection(settings) as conn, conn.cursor(pymysql.cursors.DictCursor) as cur:
        cur.execute(f"SELECT `client`, `step`, `state`, `attempt`, `started_at`, `finished_at`, `seconds`, `run_by`, "
                    f"`detail` FROM {_table(settings)}")
        rows = cur.fetchall()
    out: dict[str, dict[str, StepRecord]] = {}
    for r in rows:
        out.setdefault(r["client"], {})[r["step"]] = StepRecord(
            **{**r, "detail": json.loads(r["detail"]) if r["detail"] else {}})
    return out


def mark_started(settings: Settings, client: str, step: str, run_by: str) -> None:
    """Record that `step` begins; a step started before (an interrupted attempt) counts one more attempt."""
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {_table(settings)} (`client`, `step`, `state`, `run_by`) VALUES (%s, %s, 'started', %s) "
            "ON DUPLICATE KEY UPDATE `attempt` = `attempt` + 1, `state` = 'started', "
            "`started_at` = CURRENT_TIMESTAMP(6), `finished_at` = NULL, `seconds` = NULL, `run_by` = VALUES(`run_by`)",
            (client, step, run_by))


def mark_finished(settings: Settings, client: str, step: str, seconds: float, detail: dict[str, Any],
                  failed: bool = False) -> None:
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"UPDATE {_table(settings)} SET `state` = %s, `finished_at` = CURRENT_TIMESTAMP(6), "
                    "`seconds` = %s, `detail` = %s WHERE `client` = %s AND `step` = %s",
                    ("failed" if failed else "done", seconds, json.dumps(detail, default=str), client, step))


def clear_steps(settings: Settings, client: str) -> int:
    validate_client_name(client)
    ensure_registry(settings)
    with db.connection(settings) as conn, conn.cursor() as cur:
        return cur.execute(f"DELETE FROM {_table(settings)} WHERE `client` = %s", (client,))
