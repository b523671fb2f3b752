"""`dw bench spark`: the apply step on Spark (Sail over Spark Connect) beside the local engine, in the same run.

The issue's size: a silver of `rows` rows (1,000,000; loaded once per engine, not timed), then one batch of
`changes` changes (100,000: 90 % updates of random keys, 5 % deletes, 5 % inserts) applied by
`apply_with_engine` — the whole step each engine runs in production (landing read, bronze append, silver). Each
of the 3 runs starts from a copy of the loaded lake; median of 3, peak RSS of this process (both engines' driver
side) and of the Sail server.
"""
from __future__ import annotations

import random
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from dw_assets.bench.harness import Figure, StageResult, peak_rss_mb
from dw_assets.bench.smoke import smoke
from dw_assets.lakehouse.evolution import StaticSourceSchema
from dw_assets.lakehouse.paths import read_delta
from dw_assets.lakehouse.synthetic import LandingFeed
from dw_assets.model import load_model
from dw_assets.settings import Settings
from dw_assets.stack.process import find_free_port
from dw_assets.stack.sail import SailServer

from .dispatch import apply_with_engine

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
FULL, QUICK = (1_000_000, 100_000), (100_000, 10_000)  # (silver rows, changes applied)
CHUNK = 100_000
NO_SOURCE = StaticSourceSchema({})  # no source database: no column is added


def sizes(quick: bool) -> tuple[int, int]:
    if not quick:
        return FULL
    return (QUICK[0] // 10, QUICK[1] // 10) if smoke() else QUICK


def _changes(rows: int, n: int, seed: int = 1) -> list[tuple[str, dict]]:
    rnd = random.Random(seed)
    out: list[tuple[str, dict]] = []
    deleted: set[int] = set()
    for j in range(n):
        r = j % 20
        if r == 0:  # 5 % inserts of new keys
            k = rows + j
            out.append(("c", {"account_id": k, "name": f"n{k}", "balance": "1.00"}))
            continue
        k = rnd.randrange(rows)
        while k in deleted:
            k = rnd.randrange(rows)
        if r == 1:  # 5 % deletes
            deleted.add(k)
            out.append(("d", {"account_id": k, "name": f"n{k}", "balance": "1.00"}))
        else:
            out.append(("u", {"account_id": k, "name": f"n{k}", "balance": f"{j % 997}.25"}))
    return out


def run_spark_bench(quick: bool, runs: int = 3, work_dir: Path | None = None) -> StageResult:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return _run(quick, runs, work_dir)
    with tempfile.TemporaryDirectory(prefix="dw-bench-spark-") as tmp:
        return _run(quick, runs, Path(tmp))


def _lake(work: Path, name: str, engine: str, remote: str | None) -> Settings:
    return Settings(home=work / f"home-{name}", landing_url=str(work / "landing"), lake_url=str(work / name),
                    engine=engine, spark_remote=remote)


def _copy(base: Settings, work: Path, name: str) -> Settings:
    shutil.copytree(base.lake_url, work / name)
    return replace(base, home=work / f"home-{name}", lake_url=str(work / name))


def _timed(settings: Settings, model) -> float:
    t0 = time.perf_counter()
    r = apply_with_engine(settings, "bench", model, source_schema=NO_SOURCE)
    seconds = time.perf_counter() - t0
    assert r.ok and r.events, (r.failed, r.events)
    return seconds


def _run(quick: bool, runs: int, work: Path) -> StageResult:
    rows, changes = sizes(quick)
    (work / "model.yaml").write_text(MODEL)
    model = load_model(work / "model.yaml")
    sail = SailServer(work / "sail", find_free_port())
    pid = sail.start()
    local_s, spark_s, load_s = [], [], {}
    try:
        base_local = _lake(work, "base-local", "local", None)
        base_spark = _lake(work, "base-spark", "spark", sail.remote)
        feed = LandingFeed(base_local, "bench", {"accounts": ["account_id"]})
        for start in range(0, rows, CHUNK):  # in files of CHUNK rows: the feed's memory stays small
            feed.write("accounts", feed.events("accounts", [
                ("c", {"account_id": i, "name": f"n{i}", "balance": "1.00"})
                for i in range(start, min(rows, start + CHUNK))]))
            feed.images.clear()  # `before` images are not needed by the apply
        for name, base in (("local", base_local), ("spark", base_spark)):  # the loaded silver, not timed
            load_s[name] = _timed(base, model)
        feed.write("accounts", feed.events("accounts", _changes(rows, changes)), partition=1)
        for i in range(runs):
            local_s.append(_timed(_copy(base_local, work, f"local{i}"), model))
            spark_s.append(_timed(_copy(base_spark, work, f"spark{i}"), model))
        sail_rss = peak_rss_mb(pid)
        # The engines must agree, or the figures compare different work.
        counts = {e: read_delta(_lake(work, f"{e}0", e, None), "silver", "bench", "accounts").num_rows
                  for e in ("local", "spark")}
        assert counts["local"] == counts["spark"], counts
    finally:
        sail.stop(pid)
    fig = Figure("spark", f"apply {changes:,} changes (90 % updates, 5 % deletes, 5 % inserts) into {rows:,} rows",
                 "changes/s", [changes / s for s in spark_s], "local engine (deltalake), same changes, same run",
                 [changes / s for s in local_s],
                 bound="both: landing read and bronze append in this process; Spark: decoding here, Arrow upload of "
                       "the batch to Sail over gRPC, window + tombstone join + MERGE INTO (copy-on-write) in Sail; "
                       "local: Polars de-duplication and deltalake MERGE of the batch's keys.",
                 extra={"peak_rss_mb": {"this process": round(peak_rss_mb() or 0, 1),
                                        "sail": round(sail_rss or 0, 1)},
                        "spark_s": spark_s, "local_s": local_s,
                        "initial_load_s": {k: round(v, 2) for k, v in load_s.items()}})
    return StageResult("spark", [fig], params={"rows": rows, "changes": changes},
                       processes={"sail": sail_rss, "bench": peak_rss_mb()})


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run_spark_bench("--quick" in sys.argv).as_dict(), indent=1, default=str))
