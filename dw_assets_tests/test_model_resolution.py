"""The model is resolved by the settings alone (DW_MODEL_PATH, `dw --model`), its reports come from the folder it
names (or DW_REPORTS_SQL_DIR), and what does not fit fails in one line naming the file. No services needed."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dw_assets import cli
from dw_assets.model import ModelError, load_model
from dw_assets.reports.catalog import ReportDefinitionError, load_reports
from dw_assets.settings import load_settings

CLINIC = Path(__file__).parent / "models" / "clinic.yaml"
SHIPPED = load_model()


def _clinic_with_reports(tmp_path: Path, sql: str) -> Path:
    folder = tmp_path / "clinic_reports"
    folder.mkdir(parents=True)
    (folder / "visit_fees.sql").write_text(f"/*---\ntitle: Visit fees\n---*/\n{sql}\n")
    model = tmp_path / "clinic.yaml"
    model.write_text(CLINIC.read_text().replace('version: "clinic-0.3"', 'version: "clinic-0.3"\nreports: clinic_reports'))
    return model


def test_settings_resolve_the_model_and_its_report_folder(tmp_path: Path):
    assert load_settings(env={}, home=tmp_path).standard_model() is SHIPPED
    assert SHIPPED.reports_dir is not None and load_reports(SHIPPED)
    clinic = load_settings(env={"DW_MODEL_PATH": str(CLINIC)}, home=tmp_path).standard_model()
    assert clinic.version == "clinic-0.3" and clinic.reports_dir is None and load_reports(clinic) == ()
    # DW_REPORTS_SQL_DIR gives any model a report folder of its own.
    other = tmp_path / "shipped_copy"
    shutil.copytree(SHIPPED.reports_dir, other)
    env = {"DW_REPORTS_SQL_DIR": str(other)}
    assert load_settings(env=env, home=tmp_path).standard_model().reports_dir == other.resolve()


def test_processes_started_follow_the_same_model(tmp_path: Path):
    settings = load_settings(env={}, home=tmp_path).with_overrides(model_path=str(CLINIC))
    env = settings.child_env(base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "DW_HOME": str(tmp_path.resolve()), "DW_MODEL_PATH": str(CLINIC)}


def test_report_sql_is_validated_against_its_model(tmp_path: Path):
    good = load_model(_clinic_with_reports(tmp_path / "a", "SELECT patient_id, SUM(fee) AS fees FROM visits GROUP BY 1"))
    [spec] = load_reports(good)
    assert spec.silver_tables == ("visits",)
    bad = load_model(_clinic_with_reports(tmp_path / "b", "SELECT COUNT(*) AS n FROM orders"))
    with pytest.raises(ReportDefinitionError, match=r"visit_fees\.sql: reads table\(s\) orders not in model clinic"):
        load_reports(bad)


def test_a_missing_report_folder_names_the_model_file(tmp_path: Path):
    model = tmp_path / "m.yaml"
    model.write_text(CLINIC.read_text().replace('version: "clinic-0.3"', 'version: "x"\nreports: nowhere'))
    with pytest.raises(ModelError, match=r"m\.yaml.*`reports` folder .*nowhere.* does not exist"):
        load_model(model)


@pytest.mark.parametrize("argv", [["reports", "build"], ["lake", "init", "--client", "abc"], ["drift"]])
def test_a_missing_model_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch, argv: list[str]):
    monkeypatch.delenv("DW_MODEL_PATH", raising=False)
    missing = tmp_path / "missing.yaml"
    rc = cli.main(["--home", str(tmp_path / "home"), *argv, "--model", str(missing)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("error:") == 1 and "model file not found" in err, err
    assert str(missing) in err


def test_report_sql_that_does_not_fit_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("DW_MODEL_PATH", raising=False)
    bad = _clinic_with_reports(tmp_path, "SELECT COUNT(*) AS n FROM orders")
    assert cli.main(["--home", str(tmp_path / "home"), "--model", str(bad), "reports", "build"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and "visit_fees.sql" in err and "orders" in err, err


def test_dagster_definitions_refuse_report_sql_that_does_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from dw_assets.definitions import defs

    monkeypatch.setenv("DW_MODEL_PATH", str(_clinic_with_reports(tmp_path, "SELECT 1 AS one FROM orders o")))
    with pytest.raises(Exception) as raised:  # Dagster wraps it, naming the defs module that failed
        defs()
    chain, e = [], raised.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    [cause] = [c for c in chain if isinstance(c, ReportDefinitionError)]
    assert "visit_fees.sql" in str(cause) and "orders" in str(cause)
