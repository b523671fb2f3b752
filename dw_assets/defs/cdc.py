"""Dagster layer of CDC capture: the client-partitioned `cdc/cdc_topics` asset.

Materializing a partition runs a bounded catch-up (`dw cdc run --once` semantics) of the server's one binlog
stream, unless the continuous service is running, and reports that client's topics: end offsets, events, lag.
"""

import dagster as dg

from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings


@dg.asset(
    key_prefix=["cdc"],
    group_name="cdc",
    kinds={"mariadb", "kafka"},
    partitions_def=clients_partitions,
    owners=["team:data-platform"],
    description="Debezium-format change topics `<prefix>.<db>.<table>` of one client, caught up to the binlog end.",
)
def cdc_topics(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
    from dw_assets.cdc.materialize import catch_up_client

    report = catch_up_client(dw.load(), context.partition_key, log=context.log)
    return dg.MaterializeResult(metadata=report)


cdc_job = dg.define_asset_job(
    "cdc_catch_up", selection=[cdc_topics], executor_def=dg.in_process_executor
)
