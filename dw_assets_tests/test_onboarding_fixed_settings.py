"""Onboarding flags an already registered client cannot honour are refused, naming the flag, the stored value
and how to change it; the same values (or none) still resume or report nothing to do."""
from __future__ import annotations

import pytest

from dw_assets import cli
from dw_assets.onboarding import registry
from dw_assets.onboarding.client_options import ClientOptions, get_options
from dw_assets.onboarding.fixed_settings import FlagNotHonoured
from dw_assets.onboarding.onboard import FaultPoint, InjectedFault, onboard_client
from dw_assets.onboarding.step_log import step_records
from dw_assets_tests.test_onboarding_support import Sandbox, sandbox  # noqa: F401 - fixture


@pytest.mark.slow
def test_flags_an_onboarded_client_cannot_honour_are_refused(sandbox: Sandbox, monkeypatch, capsys):
    s = sandbox.settings
    [client] = sandbox.seed(rows=40)
    monkeypatch.setattr(cli, "load_settings", lambda home=None: s)
    monkeypatch.setenv("COLUMNS", "250")
    # Interrupted after registering: a resumed onboarding does not register again, so it cannot take new values.
    with pytest.raises(InjectedFault):
        onboard_client(s, client, options=ClientOptions(topic_partitions=2, flush_records=700),
                       fail_at=FaultPoint("partition"))
    with pytest.raises(FlagNotHonoured, match=r"--topic-partitions 2: --topic-partitions 3 cannot change it"):
        onboard_client(s, client, options=ClientOptions(topic_partitions=3))
    onboard_client(s, client, options=ClientOptions(topic_partitions=2))  # the stored value: resumes, completes
    assert get_options(s, client) == ClientOptions(topic_partitions=2, flush_records=700)

    steps = {n: r.finished_at for n, r in step_records(s, client).items()}
    for flags, named in ((["--production-db", "elsewhere"], f"--production-db {client}: --production-db elsewhere"),
                         (["--staging-db", "stage2"], f"--staging-db {client}__staging: --staging-db stage2"),
                         (["--flush-records", "900"], "--flush-records 700: --flush-records 900"),
                         (["--idle-seconds", "2"], "with the default: --idle-seconds 2")):
        assert cli.main(["clients", "onboard", client, *flags]) == 1, flags
        err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
        assert named in err and f"dw clients offboard {client}" in err and "onboard it again" in err, err
    # The same values as stored (or no flags) are honoured: nothing to do, nothing changed.
    assert cli.main(["clients", "onboard", client, "--production-db", client, "--flush-records", "700"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert {n: r.finished_at for n, r in step_records(s, client).items()} == steps
    assert registry.get_client(s, client).production_db == client
