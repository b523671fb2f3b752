"""Parity: the changes the local engine applied (out-of-order batches, redeliveries, deletes, a truncate) give the
same silver, SCD2 history and tombstones when applied by the Spark engine through Sail, and re-applying them changes nothing."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from dw_assets.engine.session import read_delta_arrow, spark_session
from dw_assets.engine.spark_apply import apply_client_spark
from dw_assets.lakehouse.bronze import deletes_since
from dw_assets.settings import Settings
from dw_assets_tests.lakehouse_support import tiny_model
from dw_assets_tests.test_lakehouse_apply import scenario
from dw_assets_tests.test_spark_interchange import _rows


def _lake(tmp_path: Path, name: str) -> Settings:
    return Settings(home=tmp_path, landing_url=str(tmp_path / "landing"), lake_url=str(tmp_path / name))


def test_spark_engine_gives_the_local_engines_silver(sail, tmp_path: Path):
    local, spark_lake = _lake(tmp_path, "lake"), _lake(tmp_path, "lake_spark")
    scenario(local, tmp_path)
    (client,) = [p.name for p in (tmp_path / "lake" / "silver").iterdir()]
    model = tiny_model(tmp_path)
    with spark_session(remote=sail) as spark:
        for attempt in range(2):  # the second run re-applies everything: a no-op
            result = apply_client_spark(spark, spark_lake, client, model, bronze_settings=local)
            if attempt == 0:
                assert result.tables["accounts"].silver.metrics["truncated"]
            else:  # incremental: nothing new in bronze, nothing read
                assert "accounts" not in result.tables
            a = DeltaTable(str(tmp_path / "lake" / "silver" / client / "accounts")).to_pyarrow_table()
            b = read_delta_arrow(spark, str(tmp_path / "lake_spark" / "silver" / client / "accounts"))
            assert _rows(b, a.schema) == _rows(a, a.schema), attempt
            # Tombstones are bookkeeping: the local engine reads its deletes back from bronze; every Spark
            # tombstone must be one of those deletes (applied in one go, Spark needs fewer of them).
            local_deletes = deletes_since(local, client, "accounts", 0)
            positions = set(zip(local_deletes["_dw_seq"].to_pylist(), local_deletes["_dw_seq_row"].to_pylist()))
            tb = read_delta_arrow(spark, str(tmp_path / "lake_spark" / "meta" / client / "tombstones" / "accounts"))
            assert tb.num_rows and set(zip(tb["_dw_seq"].to_pylist(), tb["_dw_seq_row"].to_pylist())) <= positions
            ha = DeltaTable(str(tmp_path / "lake" / "silver_history" / client / "accounts")).to_pyarrow_table()
            hb = read_delta_arrow(spark, str(tmp_path / "lake_spark" / "silver_history" / client / "accounts"))
            assert ha.num_rows > 10
            # Keys 6 and 7 were deleted (batch B) before their creates (batch A) arrived. Spark, seeing all changes,
            # ends their versions at the delete; the local engine's incremental history never saw the delete of a
            # key it had no version of and ends them at the later TRUNCATE instead (a local-engine bug, reported).
            deleted = {json.loads(r["before"])["account_id"]: (r["_dw_seq"], r["_dw_seq_row"])
                       for r in local_deletes.to_pylist()}
            ends = {r["account_id"]: (r["_dw_seq_end"], r["_dw_seq_end_row"]) for r in hb.to_pylist()
                    if r["account_id"] in (6, 7)}
            assert ends == {6: deleted[6], 7: deleted[7]}
            others = lambda t: [r for r in _rows(t, ha.schema) if r[0] not in (6, 7)]  # noqa: E731
            assert others(hb) == others(ha) and others(ha), attempt
        silver = DeltaTable(str(tmp_path / "lake_spark" / "silver" / client / "accounts")).to_pyarrow_table()
        assert sorted(silver["account_id"].to_pylist()) == [100, 102]
