"""The ingest stage: land a client's CDC events, gate them on production schema conformance, apply them to
bronze/silver/history, and say what changed - as one bounded pass (`ingest_pass`, what the Dagster ingest job and
onboarding run) or continuously for every active client (`IngestService`, `dw ingest run`). Plain Python: the
Dagster layer (dw_assets/defs/landing.py) and the runless event sink (`dagster_events`) sit on top of it.
"""
from .ingest_pass import ClientOutcome, apply_one, ingest_pass, land_or_await

__all__ = ["ClientOutcome", "apply_one", "ingest_pass", "land_or_await"]
