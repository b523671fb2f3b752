"""Onboarding speed: seconds from `onboard` to the first report for one client with `rows` rows across the model's
tables (target < 60 s), and clients per minute when a file of `batch` clients is onboarded `parallel` at a time.

Runs in a sandbox on the given stack (own registry, topic prefix, lake and Dagster home) and removes it after.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dw_assets.settings import Settings
from dw_assets.workload import seed_clients

from .batch import DEFAULT_PARALLEL, onboard_many, read_clients_file
from .onboard import onboard_client
from .sandbox import remove_sandbox, sandbox_settings

TARGET_FIRST_REPORT_S = 60.0
QUICK_BATCH = 5


def run_onboarding_bench(settings: Settings, rows: int = 10_000, batch: int = 50, batch_rows: int = 200,
                         parallel: int = DEFAULT_PARALLEL, quick: bool = False) -> dict[str, Any]:
    """`quick`: a batch of QUICK_BATCH clients instead of `batch` (same single-client measurement)."""
    batch = min(batch, QUICK_BATCH) if quick else batch
    root = Path(tempfile.mkdtemp(prefix="dw-onboard-bench-"))
    tag = f"b{int(time.time()) % 10**6}"
    box = sandbox_settings(settings, root, tag)
    first = f"bench_{tag}_first"
    names = [f"bench_{tag}_{i:03d}" for i in range(batch)]
    try:
        t0 = time.perf_counter()
        seed_clients(box, [first], rows_per_client=rows, seed=1)
        seeded_s = time.perf_counter() - t0
        result = onboard_client(box, first, run_by="bench")
        steps = {s.name: round(s.seconds, 3) for s in result.steps}
        upto = [s.name for s in result.steps]
        first_report_s = sum(s.seconds for s in result.steps[: upto.index("reports") + 1])

        t1 = time.perf_counter()
        seed_clients(box, names, rows_per_client=batch_rows, seed=2)
        batch_seed_s = time.perf_counter() - t1
        csv = root / "clients.csv"
        csv.write_text("client\n" + "\n".join(names) + "\n")
        br = onboard_many(box, read_clients_file(csv), parallel=parallel, run_by="bench")
        return {
            "first_client": {"rows": rows, "seed_seconds": round(seeded_s, 2),
                             "seconds_to_first_report": round(first_report_s, 2),
                             "total_seconds": round(result.seconds, 2), "target_seconds": TARGET_FIRST_REPORT_S,
                             "within_target": first_report_s < TARGET_FIRST_REPORT_S, "steps": steps},
            "batch": {"clients": batch, "rows_per_client": batch_rows, "parallel": parallel,
                      "seed_seconds": round(batch_seed_s, 2), "seconds": round(br.seconds, 2),
                      "clients_per_minute": round(br.clients_per_minute, 2), "failed": len(br.failed),
                      "errors": {e.spec.client: str(e.error) for e in br.failed},
                      "slowest_client_seconds": round(max((e.seconds for e in br.entries), default=0.0), 2)},
        }
    finally:
        remove_sandbox(box, [first, *names])
        shutil.rmtree(root, ignore_errors=True)
