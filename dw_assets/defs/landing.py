"""Dagster layer of landing: the client-partitioned `landing/landing_files` asset, the multi-client ingest job
(land, then gate on schema conformance and apply to bronze/silver, per client) and the Kafka-lag sensor that
starts it.

The sensor packs lagging clients into runs of up to K clients, one run per shard at a time (tag `dw/landing-shard`,
limited to one run per value in dagster.yaml), so hundreds of clients never mean hundreds of runs per tick. One
run lands and applies its clients: a run costs seconds of process start-up on two cores, so landing and apply in
separate runs would double that; a client with a breaking schema difference is skipped without stopping the
others in the same run. A sensor-started run then keeps going while its clients still have lag (up to
DW_INGEST_DRAIN_SECONDS), so under steady load batches follow each other without a run start in between.

The pass itself (land -> conformance gate -> apply) is the ingest stage's `ingest_pass` (dw_assets/ingest), which
the ingest service and onboarding use too; this module only turns its outcomes into Dagster events. While a
`dw ingest run` heartbeat is fresh, the sensor starts nothing for the clients it serves.
"""

import json
import time
from typing import Any, Callable, Mapping

import dagster as dg

from dw_assets.checks.conformance import client_databases
from dw_assets.landing.client_lock import LandingBusy
from dw_assets.landing.lag import ClientLag, measure_lag
from dw_assets.landing.run_planning import (
    DEFAULT_CLIENTS_PER_RUN,
    DEFAULT_SHARDS,
    LagThresholds,
    landing_shard,
    plan_landing_runs,
)
from dw_assets.ingest.heartbeat import served_clients
from dw_assets.ingest.ingest_pass import ClientOutcome, ingest_pass
from dw_assets.landing.sweep import DEFAULT_PARALLEL
from dw_assets.landing.writer import LandingReport, land_client
from dw_assets.partitions import clients_partitions
from dw_assets.resources import DwSettings
from dw_assets.settings import Settings

LANDING_FILES = dg.AssetKey(["landing", "landing_files"])
CDC_TOPICS = dg.AssetKey(["cdc", "cdc_topics"])
PRODUCTION_SCHEMA = dg.AssetKey(["sources", "production_schema"])
INGEST_JOB = "ingest_batch_job"
INGEST_PRIORITY = "10"  # the queued run coordinator starts higher priorities first (default 0)
SHARD_TAG = "dw/landing-shard"  # one landing run per shard at a time (dagster.yaml tag_concurrency_limits)
CLIENTS_TAG = "dw/landing-clients"  # comma-separated, for humans and for the sensor's in-flight check
CLIENT_TAG = "dw/client"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]

ClientSource = Callable[[Settings], Mapping[str, str]]


def registry_clients(settings: Settings) -> dict[str, str]:
    """Active clients -> production database, from the client registry (imported here so that this module loads
    before, and without, the onboarding package)."""
    from dw_assets.onboarding.registry import list_clients

    return {c.name: c.production_db for c in list_clients(settings, status="active")}


def landing_metadata(report: LandingReport, lag: ClientLag | None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "files_written": dg.MetadataValue.int(len(report.files)),
        "records": dg.MetadataValue.int(report.records),
        "bytes": dg.MetadataValue.int(report.bytes),
        "messages": dg.MetadataValue.int(report.messages),
        "dead_letters": dg.MetadataValue.int(report.dead_letters),
        "tombstones_skipped": dg.MetadataValue.int(report.tombstones),
        "files_adopted": dg.MetadataValue.int(len(report.adopted)),
        "complete": dg.MetadataValue.bool(report.complete),
        "seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "events_per_second": dg.MetadataValue.float(round(report.events_per_second, 1)),
        "offsets": dg.MetadataValue.json({k: {**v, "end": report.end_offsets.get(k)}
                                          for k, v in report.offsets.items()}),
        "files": dg.MetadataValue.json([f.key for f in report.files[:50]]),
    }
    if lag is not None:
        md["lag_records"] = dg.MetadataValue.int(lag.lag)
        age = lag.oldest_unlanded_age_s
        md["oldest_unlanded_age_s"] = dg.MetadataValue.float(round(age, 3) if age is not None else 0.0)
    return md


def _lag_after(settings: Settings, client: str, database: str) -> ClientLag | None:
    try:
        return measure_lag(settings, {client: database}).get(client)
    except Exception:  # noqa: BLE001 - lag is informative; landing itself succeeded
        return None


@dg.asset(
    key=LANDING_FILES,
    deps=[CDC_TOPICS],  # by key: loads before (and without) the CDC definitions
    partitions_def=clients_partitions,
    group_name="landing",
    kinds={"kafka", "s3", "parquet"},
    owners=["team:data-platform"],
    tags={"dw/stage": "landing"},
    description=(
        "Parquet files of one client's CDC events in the landing store, in Confluent's S3 sink layout "
        "(topics/<topic>/partition=<p>/<topic>+<p>+<start offset>.parquet), exactly once per file. "
        "A materialization lands everything up to the end offsets seen at its start."
    ),
)
def landing_files(context: dg.AssetExecutionContext, dw: DwSettings) -> dg.MaterializeResult:
    settings = dw.load()
    client = context.partition_key
    database = client_databases(settings, client).production_db
    try:
        report = land_client(settings, client, database=database)
    except LandingBusy as e:
        raise dg.Failure(description=str(e)) from e
    context.log.info("landed %s: %s", client, report.summary())
    return dg.MaterializeResult(metadata=landing_metadata(report, _lag_after(settings, client, database)))


class IngestBatchConfig(dg.Config):
    clients: list[str]
    databases: dict[str, str] = {}  # client -> production database, where it is not the client's name
    parallel: int = DEFAULT_PARALLEL
    apply: bool = True  # also apply the landed files to bronze/silver (False: landing only)
    apply_parallel: int = 2  # clients applied at once
    # Keep going while clients still have lag, for up to this many seconds (0: one pass). The sensor sets it from
    # DW_INGEST_DRAIN_SECONDS: under steady load one run then serves many batches instead of paying a process
    # start, a queue wait and a sensor tick per batch.
    drain_seconds: float = 0.0


def _log_outcomes(context: dg.OpExecutionContext, settings: Settings, outcomes: Mapping[str, ClientOutcome],
                  lags: Mapping[str, ClientLag]) -> dict[str, str]:
    """Dagster events of one ingest pass (dw_assets/ingest), in client order; returns {client: why it failed}."""
    from dw_assets.checks.schema_diff import differences_markdown
    from dw_assets.defs.lakehouse import lake_materializations
    from dw_assets.model import load_model

    model = load_model(settings.model_path)
    failed: dict[str, str] = {}
    for client, out in outcomes.items():
        if out.landing is not None:
            context.log_event(dg.AssetMaterialization(asset_key=LANDING_FILES, partition=client,
                                                      metadata=landing_metadata(out.landing, lags.get(client))))
        elif out.landing_busy:
            context.log.warning(out.landing_busy)  # another writer has it: it is being landed
        conformance = out.conformance
        if conformance is not None:
            # The same check the single-client runs evaluate as a blocking asset check, recorded per client here:
            # in a run of several clients a blocking check would stop all of them.
            context.log_event(dg.AssetCheckEvaluation(
                asset_key=PRODUCTION_SCHEMA, check_name="production_conforms_to_model", partition=client,
                passed=conformance.conforming, severity=dg.AssetCheckSeverity.ERROR, blocking=True,
                metadata={"breaking": len(conformance.breaking),
                          "differences": dg.MetadataValue.md(differences_markdown(conformance.breaking))}))
        result = out.apply
        if result is not None:
            for key, metadata in lake_materializations(settings, client, model, result.tables,
                                                       result.created_tables):
                context.log_event(dg.AssetMaterialization(asset_key=key, partition=client, metadata=metadata))
            context.log.info(f"{client}: applied {result.events} event(s) from {result.files} file(s) "
                             f"in {result.seconds:.2f} s")
        if out.error:
            failed[client] = out.error
            context.log.error(f"{client}: {out.error}")
    return failed


def _ingest_pass(context: dg.OpExecutionContext, settings: Settings, config: IngestBatchConfig,
                 databases: Mapping[str, str]) -> dict[str, str]:
    """Land `databases` up to their current end offsets, then apply them; returns {client: why it failed}."""
    outcomes = ingest_pass(settings, databases, parallel=config.parallel, apply=config.apply,
                           apply_parallel=config.apply_parallel)
    lags: dict[str, ClientLag] = {}
    try:
        lags = measure_lag(settings, databases)
    except Exception as e:  # noqa: BLE001 - informative only
        context.log.warning(f"lag after landing not measured: {e}")
    return _log_outcomes(context, settings, outcomes, lags)


def still_lagging(settings: Settings, databases: Mapping[str, str]) -> dict[str, str]:
    """The clients of `databases` with unlanded records now (what a further pass would take)."""
    lags = measure_lag(settings, databases)
    return {c: d for c, d in databases.items() if c in lags and lags[c].lag > 0}


@dg.op(tags={"dw/stage": "landing"},
       description="Land several clients up to their current end offsets, then apply each to bronze/silver, and "
                   "repeat while they still have lag (up to drain_seconds); records landing_files, bronze and "
                   "silver materializations per client and pass.")
def ingest_client_batch(context: dg.OpExecutionContext, config: IngestBatchConfig, dw: DwSettings) -> None:
    settings = dw.load()
    databases = {c: config.databases.get(c, c) for c in config.clients}
    deadline = time.monotonic() + max(0.0, config.drain_seconds)
    failed: dict[str, str] = {}
    pending = dict(databases)
    passes = 0
    while pending:
        passes += 1
        pass_started = time.monotonic()
        failed.update(_ingest_pass(context, settings, config, pending))
        if time.monotonic() >= deadline:
            break
        # A failed client is not retried in this run: its error stands and the next sensor tick decides.
        try:
            # A client a live ingest service took meanwhile is its to serve: the run lets it go.
            served = served_clients(settings)
            pending = still_lagging(settings, {c: d for c, d in databases.items()
                                               if c not in failed and c not in served})
        except Exception as e:  # noqa: BLE001 - the pass itself succeeded; the sensor takes it from here
            context.log.warning(f"lag not measured, ending the run after pass {passes}: {e}")
            break
        if pending:
            context.log.info(f"pass {passes} took {time.monotonic() - pass_started:.1f} s; "
                             f"{len(pending)} client(s) still lagging: another pass")
    context.log.info(f"{passes} pass(es) over {len(databases)} client(s)")
    if failed:
        # Raised after every other client was landed and applied: one client's failure stops only itself.
        raise dg.Failure(description=f"ingest failed for {len(failed)} of {len(databases)} clients",
                         metadata={"failed": dg.MetadataValue.json(failed), "passes": passes})


@dg.job(name=INGEST_JOB, tags={"dw/stage": "landing"},
        description="Land and apply a group of clients (run config lists them); started by the Kafka-lag sensor.")
def ingest_batch_job() -> None:
    ingest_client_batch()


def in_flight_landing(instance: dg.DagsterInstance) -> tuple[set[int], set[str]]:
    """Shards with a landing run queued or running, and clients being landed by any such run."""
    shards: set[int] = set()
    clients: set[str] = set()
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        tags = run.tags
        if SHARD_TAG in tags:
            shards.add(int(tags[SHARD_TAG]))
            clients.update(c for c in tags.get(CLIENTS_TAG, "").split(",") if c)
        elif run.asset_selection and LANDING_FILES in run.asset_selection and "dagster/partition" in tags:
            clients.add(tags["dagster/partition"])
    return shards, clients


def build_landing_lag_sensor(*, name: str = "landing_lag_sensor", client_source: ClientSource | None = None,
                             thresholds: LagThresholds | None = None,
                             max_clients_per_run: int = DEFAULT_CLIENTS_PER_RUN, shards: int | None = None,
                             max_runs_per_tick: int | None = None, minimum_interval_seconds: int = 15,
                             default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
                             ) -> dg.SensorDefinition:
    """The Kafka-lag sensor; `client_source` (settings -> {client: production db}) defaults to the registry."""
    source = client_source or registry_clients
    # None: from the settings at each tick (DW_LANDING_LAG_RECORDS / DW_LANDING_LAG_SECONDS / DW_LANDING_SHARDS).
    shown = thresholds or LagThresholds()

    @dg.sensor(name=name, job=ingest_batch_job, minimum_interval_seconds=minimum_interval_seconds,
               default_status=default_status,
               description=f"Every {minimum_interval_seconds}s: landing lag of all active clients; starts "
                           f"{INGEST_JOB} for clients at >= {shown.records} records or "
                           f">= {shown.age_seconds:g}s behind (defaults; DW_LANDING_LAG_* override), up to {max_clients_per_run} per run.")
    def _sensor(context: dg.SensorEvaluationContext, dw: DwSettings) -> dg.SensorResult | dg.SkipReason:
        started = time.perf_counter()
        settings = dw.load()
        th = thresholds or LagThresholds(settings.landing_lag_records, settings.landing_lag_seconds)
        n_shards = shards or settings.landing_shards
        try:
            clients = dict(source(settings))
        except ImportError:
            return dg.SkipReason("the client registry is not available yet")
        if not clients:
            return dg.SkipReason("no active clients")
        # A live `dw ingest run` lands and applies these continuously: no runs for them. Once its heartbeat is
        # older than DW_INGEST_HEARTBEAT_STALE_SECONDS the set is empty and the runs below take over.
        served = served_clients(settings) & set(clients)
        if served and served == set(clients):
            return dg.SkipReason(f"all {len(clients)} active clients are served by a live ingest service")
        active = set(clients)
        clients = {c: d for c, d in clients.items() if c not in served}
        lags = measure_lag(settings, clients)
        busy_shards, busy_clients = in_flight_landing(context.instance)
        plan = plan_landing_runs(lags, th, max_clients_per_run=max_clients_per_run, shards=n_shards,
                                 busy_shards=busy_shards, busy_clients=busy_clients, max_runs=max_runs_per_tick,
                                 now_s=time.time())
        requests = [
            dg.RunRequest(
                run_key=run.run_key,
                run_config={"ops": {"ingest_client_batch": {"config": {
                    "clients": list(run.clients), "drain_seconds": settings.ingest_drain_seconds,
                    "databases": {c: d for c, d in run.databases.items() if d != c}}}}},
                # Ingestion is what freshness waits on: dequeued before checks and reports.
                tags={SHARD_TAG: str(run.shard), CLIENTS_TAG: ",".join(run.clients), "dw/stage": "landing",
                      "dagster/priority": INGEST_PRIORITY},
            )
            for run in plan
        ]
        known = set(context.instance.get_dynamic_partitions(clients_partitions.name))
        missing = sorted(active - known)
        due = sum(1 for lag in lags.values() if th.due(lag))
        elapsed = time.perf_counter() - started
        context.log.info(f"landing lag: {len(clients)} clients, {due} due, {len(requests)} runs requested, "
                         f"busy shards {sorted(busy_shards)}, {elapsed:.2f}s")
        cursor = json.dumps({"at": round(time.time(), 3), "clients": len(clients), "due": due,
                             "requested": [r.run_key for r in requests], "tick_s": round(elapsed, 3)})
        partitions = [clients_partitions.build_add_request(missing)] if missing else None
        if not requests:
            return dg.SensorResult(skip_reason=dg.SkipReason(
                f"{due} of {len(clients)} clients due, none startable (busy shards: {sorted(busy_shards)})"
                if due else f"no client over the lag thresholds ({len(clients)} checked)"),
                cursor=cursor, dynamic_partitions_requests=partitions)
        return dg.SensorResult(run_requests=requests, cursor=cursor, dynamic_partitions_requests=partitions)

    return _sensor


landing_lag_sensor = build_landing_lag_sensor()

__all__ = ["landing_files", "ingest_batch_job", "landing_lag_sensor", "build_landing_lag_sensor", "landing_shard"]
