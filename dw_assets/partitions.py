"""The client partitioning shared by every client-partitioned asset: one dynamic partition per client."""
import dagster as dg

CLIENTS_PARTITION_NAME = "clients"
clients_partitions = dg.DynamicPartitionsDefinition(name=CLIENTS_PARTITION_NAME)
