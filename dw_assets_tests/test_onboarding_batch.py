"""Onboarding from a file: bounded parallelism, one failure does not stop the others, summary at the end; the file
format; the benchmark function in its quick form (slow)."""
from __future__ import annotations

import pytest

from dw_assets import cli
from dw_assets.onboarding import registry
from dw_assets.onboarding.batch import ClientsFileError, read_clients_file
from dw_assets.onboarding.bench import run_onboarding_bench
from dw_assets.onboarding.client_options import ClientOptions, get_options
from dw_assets.onboarding.onboard import onboarding_complete
from dw_assets_tests.test_onboarding_support import Sandbox, sandbox  # noqa: F401 - fixture

# Each of these onboards clients end to end (tens of seconds): outside the quick subset.
pytestmark = pytest.mark.slow


def test_onboard_from_file_one_failure_does_not_stop_the_others(sandbox: Sandbox, tmp_path, monkeypatch, capsys):
    s = sandbox.settings
    good = sandbox.seed(rows=120, n=3)
    missing = "nodb_" + good[0][-8:]  # no databases: refused at validation
    f = tmp_path / "clients.csv"
    f.write_text("client,topic_partitions\n" + f"{good[0]},2\n{missing},\n{good[1]},\n{good[2]},\n")
    monkeypatch.setattr(cli, "load_settings", lambda home=None: s)
    monkeypatch.setenv("COLUMNS", "250")

    assert cli.main(["clients", "onboard", "--from-file", str(f), "--parallel", "2"]) == 1
    out = capsys.readouterr().out
    assert "3 ok, 1 failed" in out and "refused" in out and missing in out
    for c in good:
        assert registry.get_client(s, c).status == "active" and onboarding_complete(s, c)
    assert get_options(s, good[0]) == ClientOptions(topic_partitions=2)
    with pytest.raises(registry.RegistryError):
        registry.get_client(s, missing)


def test_clients_file_formats(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("# clients\nacme\nglobex\n")
    assert [c.client for c in read_clients_file(plain)] == ["acme", "globex"]
    full = tmp_path / "full.csv"
    full.write_text("client,production_db,staging_db,flush_records,idle_seconds\nacme,acme_prod,acme_stg,100,2.5\n")
    [spec] = read_clients_file(full)
    assert (spec.production_db, spec.staging_db) == ("acme_prod", "acme_stg")
    assert spec.options == ClientOptions(flush_records=100, idle_seconds=2.5)
    dup = tmp_path / "dup.csv"
    dup.write_text("client\nacme\nacme\n")
    with pytest.raises(ClientsFileError, match="twice"):
        read_clients_file(dup)
    bad = tmp_path / "bad.csv"
    bad.write_text("client,flush_records\nacme,lots\n")
    with pytest.raises(ClientsFileError, match="line 2"):
        read_clients_file(bad)


@pytest.mark.slow
def test_bench_quick(stack_settings):
    r = run_onboarding_bench(stack_settings, rows=2000, batch=3, batch_rows=100, quick=True)
    print(r)
    assert r["batch"]["failed"] == 0 and r["batch"]["clients_per_minute"] > 0
    assert r["first_client"]["seconds_to_first_report"] > 0
