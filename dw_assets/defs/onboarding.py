"""Dagster layer of onboarding: the client registry sensor and the onboarding job it starts.

The sensor makes the `clients` dynamic partitions follow the registry (onboarding/active/paused clients have one,
offboarded clients lose theirs) and starts `client_onboarding` for clients whose onboarding is not complete, so a
registry row inserted by another tool with status `onboarding` is onboarded without the CLI, by the same steps.
"""

from typing import Any

import dagster as dg

from dw_assets.onboarding.onboard import FaultPoint, onboard_client
from dw_assets.onboarding.registry import Client, list_clients
from dw_assets.onboarding.run_lock import lock_holder
from dw_assets.onboarding.step_log import StepRecord, records_by_client
from dw_assets.onboarding.steps import RECORDED_STEPS
from dw_assets.onboarding.validation import PIPELINE_STATUSES
from dw_assets.partitions import CLIENTS_PARTITION_NAME, clients_partitions
from dw_assets.resources import DwSettings

ONBOARDING_JOB = "client_onboarding"
CLIENT_TAG = "dw/client"  # the per-client run concurrency key of dagster.yaml
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


class OnboardingConfig(dg.Config):
    client: str
    fail_at: str | None = None  # drills: `land`, `land:after`, `7` (see FaultPoint)


class _LogObserver:
    """Onboarding progress as run log lines."""

    def __init__(self, log: Any):
        self.log = log

    def begin(self, client: str, total: int, resumed: bool) -> None:
        self.log.info(f"{'resuming' if resumed else 'starting'} onboarding of {client} ({total} steps)")

    def step_skipped(self, client: str, index: int, total: int, name: str, title: str) -> None:
        self.log.info(f"[{index}/{total}] {title}: done earlier")

    def step_started(self, client: str, index: int, total: int, name: str, title: str) -> None:
        pass

    def step_done(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                  detail: dict[str, Any]) -> None:
        self.log.info(f"[{index}/{total}] {title}: {seconds:.2f} s {detail.get('summary', '')}")

    def step_failed(self, client: str, index: int, total: int, name: str, title: str, seconds: float,
                    error: BaseException) -> None:
        self.log.error(f"[{index}/{total}] {title} failed after {seconds:.2f} s: {error}")

    def end(self, client: str, seconds: float, ok: bool, message: str) -> None:
        self.log.info(f"{message} (total {seconds:.2f} s)")


@dg.op(tags={"dw/stage": "onboarding"},
       description="Run the onboarding steps of one client (resumes after the last recorded step).")
def onboard_client_op(context: dg.OpExecutionContext, config: OnboardingConfig, dw: DwSettings) -> None:
    result = onboard_client(dw.load(), config.client, run_by=f"dagster:run {context.run_id[:8]}",
                            observer=_LogObserver(context.log), instance=context.instance,
                            fail_at=FaultPoint.parse(config.fail_at) if config.fail_at else None)
    context.log.info(f"{config.client}: status {result.status}, steps run: {', '.join(result.ran) or 'none'}")


@dg.job(name=ONBOARDING_JOB, tags={"dw/stage": "onboarding"}, executor_def=dg.in_process_executor,
        description="Onboard one client (run config names it): the steps of `dw clients onboard`.")
def client_onboarding() -> None:
    onboard_client_op()


def needs_onboarding(client: Client, records: dict[str, StepRecord]) -> bool:
    """Status `onboarding`, or an interrupted onboarding (some steps recorded, not all done) of a live client."""
    complete = all(n in records and records[n].done for n in RECORDED_STEPS)
    if complete or client.status not in PIPELINE_STATUSES or client.status == "paused":
        return False
    return client.status == "onboarding" or bool(records)


def onboarding_run_key(client: Client, records: dict[str, StepRecord]) -> str:
    # A retry only after progress: the key changes when a step completes or the registry row changes, so a run
    # that keeps failing at the same step is not requested again and again.
    done = sum(1 for r in records.values() if r.done)
    return f"onboard:{client.name}:{client.updated_at.isoformat()}:{done}"


def clients_in_flight(instance: dg.DagsterInstance) -> set[str]:
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=ONBOARDING_JOB, statuses=IN_FLIGHT))
    return {r.tags[CLIENT_TAG] for r in runs if CLIENT_TAG in r.tags}


@dg.sensor(name="client_registry_sensor", job=client_onboarding, minimum_interval_seconds=30,
           default_status=dg.DefaultSensorStatus.RUNNING,
           description="Every 30 s: adds `clients` partitions for onboarding/active/paused clients, removes those "
                       "of offboarded clients, and starts client_onboarding for clients whose onboarding is not "
                       "complete.")
def client_registry_sensor(context: dg.SensorEvaluationContext, dw: DwSettings) -> dg.SensorResult:
    settings = dw.load()
    clients = list_clients(settings)
    records = records_by_client(settings)
    known = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITION_NAME))
    add = sorted({c.name for c in clients if c.status in PIPELINE_STATUSES} - known)
    remove = sorted({c.name for c in clients if c.status == "offboarded"} & known)
    busy = clients_in_flight(context.instance)
    requests = []
    for c in clients:
        steps = records.get(c.name, {})
        if not needs_onboarding(c, steps) or c.name in busy or lock_holder(settings, c.name) is not None:
            continue  # a run or the CLI is onboarding it right now
        requests.append(dg.RunRequest(run_key=onboarding_run_key(c, steps),
                                      run_config={"ops": {"onboard_client_op": {"config": {"client": c.name}}}},
                                      tags={CLIENT_TAG: c.name, "dw/stage": "onboarding"}))
    partition_requests: list[Any] = []
    if add:
        partition_requests.append(clients_partitions.build_add_request(add))
    if remove:
        partition_requests.append(clients_partitions.build_delete_request(remove))
    context.log.info(f"registry: {len(clients)} clients; partitions +{len(add)} -{len(remove)}; "
                     f"{len(requests)} onboarding run(s) requested")
    skip = None if requests else dg.SkipReason(f"no client to onboard ({len(clients)} in the registry)")
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests or None,
                           skip_reason=skip)
