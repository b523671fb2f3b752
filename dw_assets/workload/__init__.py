"""Synthetic clients for the warehouse: seed databases from the model and drive a steady OLTP workload.

`generator` fills new client databases; `workload` changes them at a requested rate; both read only the model.
"""
from .generator import GeneratorError, RowFactory, SeededClient, client_names, seed_clients
from .workload import BatchResult, WorkloadError, WorkloadStats, apply_batch, run_workload

__all__ = [
    "BatchResult", "GeneratorError", "RowFactory", "SeededClient", "WorkloadError", "WorkloadStats", "apply_batch",
    "client_names", "run_workload", "seed_clients",
]
