"""Schema conformance, reconciliation, freshness and drift alerting: the plain-Python checks of the pipeline.

`dw_assets.defs.checks` wires these into Dagster asset checks, a schedule and a summary asset; `commands`
exposes `dw drift`. Nothing here imports Dagster.
"""
