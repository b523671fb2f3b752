"""CDC capture: one binlog stream per MariaDB server -> Debezium-format change events on Kafka topics.

`capture.CaptureService` is the service (`dw cdc run`); `bench.run_cdc_bench` measures it; README.md documents
the envelope and the value mapping per MariaDB type.
"""
