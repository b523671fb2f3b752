"""`dw bench spark`: the apply step on Spark (Sail over Spark Connect) beside the local engine, in the same run.

Both engines apply the same committed changes (`rows` inserts, then `changes` updates of random keys) into an
empty silver of the tiny two-table model shape; median of 3, peak RSS of this process and of the Sail server.
"""
from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from dw_assets.bench.harness import Figure, StageResult, peak_rss_mb
from dw_assets.lakehouse.apply import apply_client
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack.process import find_free_port
from dw_assets.stack.sail import SailServer

from .session import spark_session
from .spark_apply import apply_client_spark

MODEL = """
version: "bench-1"
tables:
  - name: accounts
    options: {change_data_feed: false, scd2: false}
    columns:
      - {name: account_id, type: BIGINT, primary_key: true}
      - {name: name, type: VARCHAR(100), nullable: false}
      - {name: balance, type: "DECIMAL(14,2)", nullable: false}
"""


def _feed(settings: Settings, client: str, rows: int, changes: int, seed: int = 1) -> None:
    feed = LandingFeed(settings, client, {"accounts": ["account_id"]})
    rnd = random.Random(seed)
    ins = [("c", {"account_id": i, "name": f"n{i}", "balance": "1.00"}) for i in range(rows)]
    feed.write("accounts", feed.events("accounts", ins))
    upd = [("u", {"account_id": (k := rnd.randrange(rows)), "name": f"n{k}", "balance": f"{j % 997}.25"})
           for j in range(changes)]
    feed.write("accounts", feed.events("accounts", upd), partition=1)


def run_spark_bench(quick: bool, runs: int = 3, work_dir: Path | None = None) -> StageResult:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return _run(quick, runs, work_dir)
    with tempfile.TemporaryDirectory(prefix="dw-bench-spark-") as tmp:
        return _run(quick, runs, Path(tmp))


def _run(quick: bool, runs: int, work: Path) -> StageResult:
    rows, changes = (10_000, 1_000) if quick else (100_000, 10_000)
    (work / "model.yaml").write_text(MODEL)
    model = load_model(work / "model.yaml")
    source = Settings(home=work, landing_url=str(work / "landing"), lake_url=str(work / "lake0"))
    _feed(source, "bench", rows, changes)
    local_s, spark_s = [], []
    sail = SailServer(work / "sail", find_free_port())
    pid = sail.start()
    try:
        with spark_session(remote=sail.remote) as spark:
            for i in range(runs):
                lake = Settings(home=work, landing_url=source.landing_url, lake_url=str(work / f"local{i}"))
                t0 = time.perf_counter()
                assert apply_client(lake, "bench", model, source_schema=StaticSourceSchema({})).ok
                local_s.append(time.perf_counter() - t0)
                target = Settings(home=work, lake_url=str(work / f"spark{i}"))
                t0 = time.perf_counter()
                apply_client_spark(spark, target, "bench", model, bronze_settings=lake)
                spark_s.append(time.perf_counter() - t0)
        sail_rss = peak_rss_mb(pid)
    finally:
        sail.stop(pid)
    events = rows + changes
    fig = Figure("spark", f"apply {events:,} changes ({rows:,} inserts, {changes:,} updates) into an empty silver",
                 "changes/s", [events / s for s in spark_s], "local engine (deltalake), same changes, same run",
                 [events / s for s in local_s],
                 bound="Spark: decoding in this process, Arrow upload to Sail over gRPC, window + MERGE INTO in Sail; "
                       "local: landing read, bronze append, Polars de-duplication, deltalake MERGE.",
                 extra={"peak_rss_mb": {"this process": round(peak_rss_mb() or 0, 1),
                                        "sail": round(sail_rss or 0, 1)},
                        "spark_s": spark_s, "local_s": local_s})
    return StageResult("spark", [fig], params={"rows": rows, "changes": changes},
                       processes={"sail": sail_rss, "bench": peak_rss_mb()})


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_spark_bench("--quick" in sys.argv).as_dict(), indent=1, default=str))
