"""Registry extensions: an old control database gains the `options` column in place; options merge; the step log."""
from __future__ import annotations

import uuid
from dataclasses import replace

from dw_assets import db
from dw_assets.identifiers import quote_ident
from dw_assets.onboarding import registry
from dw_assets.onboarding.client_options import ClientOptions, get_options, set_options
from dw_assets.onboarding.step_log import clear_steps, mark_finished, mark_started, step_records


def test_old_registry_is_migrated_and_options_merge(stack_settings):
    s = replace(stack_settings, control_db=f"dw_control_old_{uuid.uuid4().hex[:6]}")
    q = quote_ident(s.control_db)
    try:
        with db.connection(s) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {q}")
            # The registry as the first release created it: no `options` column.
            cur.execute(f"CREATE TABLE {q}.`clients` (`name` VARCHAR(64) NOT NULL PRIMARY KEY, "
                        "`production_db` VARCHAR(64) NOT NULL, `staging_db` VARCHAR(64) NOT NULL, "
                        "`status` ENUM('seeded','onboarding','active','paused','offboarded') NOT NULL, "
                        "`model_version` VARCHAR(64) NULL, `created_at` DATETIME(6) NOT NULL DEFAULT "
                        "CURRENT_TIMESTAMP(6), `updated_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) "
                        "ON UPDATE CURRENT_TIMESTAMP(6))")
            cur.execute(f"INSERT INTO {q}.`clients` (`name`, `production_db`, `staging_db`, `status`) "
                        "VALUES ('acme', 'acme', 'acme__staging', 'seeded')")
        registry.ensure_registry(s)
        registry.ensure_registry(s)  # idempotent
        assert get_options(s, "acme") == ClientOptions()
        set_options(s, "acme", ClientOptions(topic_partitions=4))
        merged = set_options(s, "acme", ClientOptions(flush_records=10))
        assert merged == get_options(s, "acme") == ClientOptions(topic_partitions=4, flush_records=10)
        assert merged.flush_policy().flush_records == 10

        mark_started(s, "acme", "topics", "t")
        mark_started(s, "acme", "topics", "t")  # an interrupted attempt, then another
        mark_finished(s, "acme", "topics", 0.5, {"summary": "ok"})
        rec = step_records(s, "acme")["topics"]
        assert (rec.state, rec.attempt, rec.detail) == ("done", 2, {"summary": "ok"})
        assert clear_steps(s, "acme") == 1 and step_records(s, "acme") == {}
    finally:
        with db.connection(s) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {q}")
