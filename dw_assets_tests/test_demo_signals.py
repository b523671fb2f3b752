"""`dw demo` without --duration: the UI answers on the chosen port, and SIGINT (Ctrl-C) stops every process the
demo started (capture service, Dagster daemon and webserver with their code servers) while the stack stays up."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dw_assets.demo.dagster_processes import REPO_ROOT, session_members, webserver_answers
from dw_assets.stack import Stack, StackConfig, find_free_port
from dw_assets.stack.process import pid_alive, wait_until
from dw_assets_tests.test_ui_browser import demo_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_ctrl_c_stops_everything_the_demo_started():
    home = Path(tempfile.mkdtemp(prefix="dwsig"))
    port = find_free_port()
    out = home / "demo.out"
    with open(out, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "dw"), "demo", "--ui-port", str(port), "--clients", "1",
             "--rows-per-client", "300", "--rate", "100"],
            env=demo_env(home, find_free_port(), find_free_port()), cwd=REPO_ROOT, stdout=log,
            stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: "dw demo is running" in out.read_text() or proc.poll() is not None, 420, 1.0), \
            out.read_text()[-3000:]
        assert proc.poll() is None, out.read_text()[-3000:]
        assert webserver_answers(f"http://127.0.0.1:{port}")
        text = out.read_text()
        capture_pid = int(re.search(r"capture service started \(pid (\d+)", text).group(1))
        status = Stack(StackConfig(home=home)).status()
        stack_pids = {status["mariadb"]["pid"], status["kafka"]["pid"]}  # `up` spawned them; they stay up
        started = (set(_children(proc.pid)) - stack_pids) | {capture_pid}  # Dagster processes, capture service
        assert len(started) >= 3, started
        sessions = {p: session_members(p) for p in started}
        time.sleep(5)  # let the workload and probe run for a moment

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 0, out.read_text()[-3000:]
        text = out.read_text()
        assert "stopped: workload" in text and "dagster-daemon" in text and "dagster-webserver" in text
        still = [p for p in started | {m for ms in sessions.values() for m in ms} if pid_alive(p)]
        assert not still, f"still running after Ctrl-C: {still}"
        assert not webserver_answers(f"http://127.0.0.1:{port}")
        assert all(pid_alive(p) for p in stack_pids)  # the stack stays up (`dw stack down` stops it)
    finally:
        if proc.poll() is None:
            proc.kill()
        Stack(StackConfig(home=home)).down()


def _children(ppid: int) -> list[int]:
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            out.append(int(entry.name))
    return out
