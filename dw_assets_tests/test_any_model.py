"""Any model, really: a second, independent model (dw_assets_tests/models/clinic.yaml: a clinic, 11 tables, small
unsigned keys, YEAR, SET, DECIMAL(4,2), BLOB, second-precision times, junction tables keyed by two references, no
reports) driven through the command line, onboarding, capture, landing, the lake and the Dagster definitions.

One sandbox for the module. Client `env` gets the model from the settings (DW_MODEL_PATH), client `flag` only from
`dw --model`; both must end up the same, and nothing anywhere may carry a table name of the shipped model.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from dw_assets import cli, db
from dw_assets.identifiers import quote_qualified, staging_db_for
from dw_assets.model import load_model
from dw_assets.onboarding import registry
from dw_assets.onboarding.onboard import onboarding_complete
from dw_assets.onboarding.sandbox import remove_sandbox, sandbox_settings
from dw_assets.settings import Settings
from dw_assets_tests.conftest import unique_client
from dw_assets_tests.pipeline_support import assert_silver_equals_source

CLINIC = Path(__file__).parent / "models" / "clinic.yaml"
MODEL = load_model(CLINIC)
SHIPPED_NAMES = re.compile(r"(?<![a-z0-9])(" + "|".join(load_model().table_names) + r")(?![a-z0-9])")
ROWS = 300


@dataclass
class Clinic:
    env: Settings  # DW_MODEL_PATH set (the settings every stage reads)
    flag: Settings  # no model in the settings: only `dw --model`
    env_client: str
    flag_client: str


@pytest.fixture(scope="module")
def clinic(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    env = replace(sandbox_settings(stack_settings, tmp_path_factory.mktemp("clinic")), model_path=str(CLINIC))
    box = Clinic(env, replace(env, model_path=None), unique_client("cle"), unique_client("clf"))
    yield box
    remove_sandbox(env, [box.env_client, box.flag_client])


def dw(settings: Settings, *argv: str) -> tuple[int, str, str]:
    """`dw ...` in this process with `settings` as what the environment resolves to; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setattr(cli, "load_settings", lambda home=None: settings)
        mp.delenv("DW_MODEL_PATH", raising=False)  # only the settings (or --model) name the model
        mp.setenv("COLUMNS", "250")
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def both(box: Clinic, *argv: str) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
    """The same command for the env client (model from the settings) and the flag client (`--model`)."""
    def named(client: str) -> list[str]:
        return [client if a == "{client}" else a for a in argv]

    return (dw(box.env, *named(box.env_client)),
            dw(box.flag, "--model", str(CLINIC), *named(box.flag_client)))


def _checksums(settings: Settings, database: str) -> list[tuple[str, int]]:
    tables = ", ".join(quote_qualified(database, t.name) for t in MODEL.tables)
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {tables} EXTENDED")
        return [(r[0].split(".", 1)[1], r[1]) for r in cur.fetchall()]


def _schemata(settings: Settings, names: list[str]) -> list[str]:
    with db.connection(settings) as conn, conn.cursor() as cur:
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ("
                    + ", ".join(["%s"] * len(names)) + ")", names)
        return [r[0] for r in cur.fetchall()]


def test_seed_fills_junction_tables_the_same_either_way(clinic: Clinic):
    env, flag = both(clinic, "seed", "--clients", "{client}", "--rows-per-client", str(ROWS))
    assert env[0] == 0 and flag[0] == 0, (env, flag)
    # Same seed, same position: the same data, whether the model came from DW_MODEL_PATH or --model.
    a, b = _checksums(clinic.env, clinic.env_client), _checksums(clinic.env, clinic.flag_client)
    assert a == b and [t for t, _ in a] == list(MODEL.table_names)
    with db.connection(clinic.env) as conn, conn.cursor() as cur:
        for table in ("care_team", "findings"):  # primary key = two references
            cur.execute(f"SELECT COUNT(*) FROM {quote_qualified(clinic.env_client, table)}")
            assert cur.fetchone()[0] > 10
    assert registry.get_client(clinic.env, clinic.env_client).model_version == MODEL.version


def test_a_failed_seed_leaves_nothing_half_made(clinic: Clinic, tmp_path: Path):
    # A model the generator cannot fill half-way through: `referrals` needs a visit, and no visit is made.
    raw = yaml.safe_load(CLINIC.read_text())
    for t in raw["tables"]:
        if t["name"] == "visits":
            t["workload"]["rows_per_parent"] = [0, 0]
    raw["tables"].append({"name": "referrals", "workload": {"rows_per_parent": [1, 1]}, "columns": [
        {"name": "referral_id", "type": "INT UNSIGNED", "primary_key": True, "auto_increment": True},
        {"name": "patient_id", "type": "MEDIUMINT UNSIGNED", "nullable": False, "references": "patients.patient_id"},
        {"name": "visit_id", "type": "INT UNSIGNED", "nullable": False, "references": "visits.visit_id"}]})
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(raw))
    first, second = unique_client("clx"), unique_client("cly")
    rc, _, err = dw(clinic.flag, "--model", str(broken), "seed", "--clients", f"{first},{second}",
                    "--rows-per-client", "50")
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # the rest: the progress bar
    assert rc == 2 and "Traceback" not in err and len(errors) == 1, err
    assert f"seeding {first} failed" in err and "referrals" in err and "nothing of" in err
    assert _schemata(clinic.env, [first, staging_db_for(first), second, staging_db_for(second)]) == []
    with pytest.raises(registry.RegistryError):
        registry.get_client(clinic.env, first)


def test_onboarding_skips_reports_and_finishes(clinic: Clinic):
    env, flag = both(clinic, "clients", "onboard", "{client}")
    assert env[0] == 0 and flag[0] == 0, (env, flag)
    for rc, out, _ in (env, flag):
        assert "skipped" in out and "no report folder" in out, out
    for client in (clinic.env_client, clinic.flag_client):
        row = registry.get_client(clinic.env, client)
        assert (row.status, row.model_version) == ("active", MODEL.version)
        assert onboarding_complete(clinic.env, client)
        assert_silver_equals_source(clinic.env, client, MODEL)


def test_changes_flow_to_silver_through_the_cli(clinic: Clinic):
    from dw_assets.workload import apply_batch

    for client in (clinic.env_client, clinic.flag_client):
        for i in range(3):
            apply_batch(clinic.env, client, seed=10 + i, rows=60, model=MODEL)
    assert dw(clinic.env, "cdc", "run", "--once")[0] == 0
    landed = both(clinic, "landing", "run", "--client", "{client}", "--once")
    assert [r[0] for r in landed] == [0, 0], landed
    inits = both(clinic, "lake", "init", "--client", "{client}")
    assert [(rc, out.split(" table(s)")[0]) for rc, out, _ in inits] == [(0, "0"), (0, "0")], inits
    applied = both(clinic, "lake", "apply", "--client", "{client}", "--json")
    assert [r[0] for r in applied] == [0, 0], applied
    for rc, out, _ in applied:
        result = json.loads(out)
        assert set(result["tables"]) == set(MODEL.table_names) and result["events"] > 0
    for client in (clinic.env_client, clinic.flag_client):
        assert_silver_equals_source(clinic.env, client, MODEL)


def test_drift_and_reports_follow_the_model(clinic: Clinic):
    env = dw(clinic.env, "drift", "--json")
    flag = dw(clinic.flag, "--model", str(CLINIC), "drift", "--json")
    assert env[0] == 0 and flag[0] == 0, (env, flag)
    summaries = [json.loads(out)["summary"] for _, out, _ in (env, flag)]
    assert summaries[0] == summaries[1]
    assert summaries[0]["model_version"] == MODEL.version and summaries[0]["conforming"] == summaries[0]["clients"] == 2
    for rc, out, err in (dw(clinic.env, "reports", "build"), dw(clinic.flag, "--model", str(CLINIC), "reports", "build")):
        assert rc == 0 and "no reports to build" in out and "Traceback" not in err, (out, err)


def _definitions(monkeypatch: pytest.MonkeyPatch):
    from dw_assets.definitions import defs

    monkeypatch.setenv("DW_MODEL_PATH", str(CLINIC))
    return defs()


def test_definitions_have_the_models_assets_and_no_reports(monkeypatch: pytest.MonkeyPatch):
    keys = {k.to_user_string() for k in _definitions(monkeypatch).resolve_all_asset_keys()}
    for layer in ("bronze", "silver"):
        assert {f"{layer}/{t}" for t in MODEL.table_names} <= keys
    assert not [k for k in keys if k.startswith(("gold/", "reports/"))]


def test_no_name_of_the_shipped_model_anywhere(clinic: Clinic, monkeypatch: pytest.MonkeyPatch):
    """Asset keys, check names, lake and landing paths, topics, the lake's model metadata and the registry."""
    import pyarrow.fs as pafs

    from dw_assets.lakehouse.paths import filesystem, join, open_table
    from dw_assets.landing.client_topics import list_cluster_topics
    from confluent_kafka.admin import AdminClient

    d = _definitions(monkeypatch)
    found: list[str] = [k.to_user_string() for k in d.resolve_all_asset_keys()]
    found += [str(c.name) for c in d.resolve_asset_graph().asset_check_keys]
    for url in (clinic.env.lake_url, clinic.env.landing_url):
        fs, root = filesystem(clinic.env, url)
        found += [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))]
    prefix = clinic.env.kafka.topic_prefix
    topics = [t for t in list_cluster_topics(AdminClient(clinic.env.kafka.client_config())) if prefix in t]
    assert any(t.endswith(".visits") for t in topics)
    found += topics
    meta = open_table(clinic.env, join(clinic.env.lake_url, "meta", "standard_model"))
    assert meta is not None
    found += [json.dumps(r, default=str) for r in meta.to_pyarrow_table().to_pylist()]
    found += [json.dumps(registry.get_client(clinic.env, c).__dict__, default=str)
              for c in (clinic.env_client, clinic.flag_client)]
    assert len(found) > 100
    hits = sorted({f for f in found if SHIPPED_NAMES.search(f)})
    assert hits == [], hits[:20]


def test_demo_pieces_follow_the_model():
    from dw_assets.demo.freshness import marker_target
    from dw_assets.reports.build import no_reports_reason

    target = marker_target(MODEL)
    assert (target.table, target.column, target.fsp) == ("patients", "changed_at", 0)
    assert "second precision" in str(target)
    assert "names no report folder" in (no_reports_reason(MODEL) or "")
    assert no_reports_reason(load_model()) is None
