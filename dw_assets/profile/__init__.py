"""Compute profiling (`dw profile`): each job type run on each compute configuration that runs here, measured per
run in its own subprocess (wall, CPU, peak RSS, I/O), priced from `profile-prices.yaml`, with the cost/latency
Pareto frontier and a recommendation per job type. Plain Python; the Dagster asset lives in `defs/profiling.py`.
"""
