"""dw_assets: a real-time streaming data warehouse orchestrated by Dagster.

MariaDB binlog -> Debezium-format CDC -> Kafka -> S3 landing -> Delta lake -> reports.
Each stage is a plain-Python package; `dw_assets.defs` is the thin Dagster layer over them.
"""
