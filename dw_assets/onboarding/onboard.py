"""`onboard_client`: run the onboarding steps for one client, resuming after the last step an earlier attempt
recorded as done, under the client's lifecycle lock. The CLI, the Dagster onboarding job and the batch onboarding
all call this one function.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from dw_assets.identifiers import validate_client_name
from dw_assets.model import StandardModel
from dw_assets.settings import Settings

from . import registry
from .client_options import ClientOptions
from .fixed_settings import refuse_unhonourable_flags
from .progress import OnboardingObserver, SilentObserver
from .run_lock import client_run_lock
from .step_log import mark_finished, mark_started, step_records
from .steps import RECORDED_STEPS, STEP_NAMES, STEPS, OnboardingContext


class InjectedFault(RuntimeError):
    """Raised on purpose at a chosen step (tests, drills): stands in for a crash at that point."""


@dataclass(frozen=True)
class FaultPoint:
    """Where to raise InjectedFault: before a step's work, or after it but before it is recorded as done."""

    step: str
    when: Literal["before", "after"] = "before"

    @classmethod
    def parse(cls, spec: str) -> "FaultPoint":
        """`land`, `land:after` or a 1-based step number such as `7` or `7:after`."""
        name, _, when = spec.strip().partition(":")
        if name.isdigit():
            if not 1 <= int(name) <= len(STEP_NAMES):
                raise ValueError(f"step number {name} out of range 1-{len(STEP_NAMES)}")
            name = STEP_NAMES[int(name) - 1]
        if name not in STEP_NAMES:
            raise ValueError(f"unknown onboarding step {name!r}: one of {', '.join(STEP_NAMES)}")
        if when not in ("", "before", "after"):
            raise ValueError(f"fault timing must be 'before' or 'after', not {when!r}")
        return cls(name, "after" if when == "after" else "before")


class OnboardingFailed(RuntimeError):
    def __init__(self, client: str, step: str, error: BaseException):
        self.client, self.step, self.error = client, step, error
        super().__init__(f"onboarding of {client!r} failed at step {step!r}: {type(error).__name__}: {error} "
                         "(run it again to resume from this step)")


@dataclass
class StepOutcome:
    name: str
    title: str
    state: Literal["done", "skipped", "failed"]
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class OnboardingResult:
    client: str
    steps: list[StepOutcome] = field(default_factory=list)
    seconds: float = 0.0
    status: str | None = None
    already_complete: bool = False

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "done"]

    def as_dict(self) -> dict[str, Any]:
        return {"client": self.client, "status": self.status, "seconds": round(self.seconds, 3),
                "already_complete": self.already_complete,
                "steps": [{"name": s.name, "state": s.state, "seconds": round(s.seconds, 3), "detail": s.detail}
                          for s in self.steps]}


def onboarding_complete(settings: Settings, client: str) -> bool:
    records = step_records(settings, client)
    return all(records.get(n) is not None and records[n].done for n in RECORDED_STEPS)


def onboard_client(settings: Settings, client: str, production_db: str | None = None, staging_db: str | None = None,
                   *, options: ClientOptions | None = None, model: StandardModel | None = None,
                   run_by: str = "dw", observer: OnboardingObserver | None = None,
                   fail_at: FaultPoint | None = None, snapshot_timeout_s: float = 900.0,
                   instance: Any = None) -> OnboardingResult:
    """Onboard `client` (see the steps module); raises OnboardingRefused (validation, nothing changed),
    FlagNotHonoured (a database or option the registered client cannot change), OnboardingFailed (a step
    failed: re-run to resume), ClientBusy (another process is at it) or InjectedFault.

    `instance`: the Dagster instance to add the partition to (a run passes its own; default settings.dagster_home).
    """
    validate_client_name(client)
    observer = observer or SilentObserver()
    model = model or settings.standard_model()
    started = time.perf_counter()
    result = OnboardingResult(client)
    total = len(STEPS)
    with client_run_lock(settings, client):
        records = step_records(settings, client)
        ctx = OnboardingContext(settings, client, production_db, staging_db, model, options or ClientOptions(),
                                run_by, records, instance=instance, snapshot_timeout_s=snapshot_timeout_s)
        done = {n for n, r in records.items() if r.done}
        refuse_unhonourable_flags(settings, client, production_db, staging_db, ctx.options, done)
        observer.begin(client, total, resumed=bool(records))
        if done >= set(RECORDED_STEPS):
            # Complete already: change nothing (a deliberate re-onboarding goes through offboard first).
            result.already_complete = True
            for i, step in enumerate(STEPS, 1):
                result.steps.append(StepOutcome(step.name, step.title, "skipped"))
                observer.step_skipped(client, i, total, step.name, step.title)
        else:
            for i, step in enumerate(STEPS, 1):
                if not step.always and step.name in done:
                    result.steps.append(StepOutcome(step.name, step.title, "skipped"))
                    observer.step_skipped(client, i, total, step.name, step.title)
                    continue
                result.steps.append(_run_step(ctx, step, i, total, observer, fail_at))
        result.status = registry.get_client(settings, client).status
    result.seconds = time.perf_counter() - started
    message = "already onboarded: nothing to do" if result.already_complete else f"{client} is {result.status}"
    observer.end(client, result.seconds, True, message)
    return result


def _run_step(ctx: OnboardingContext, step, index: int, total: int, observer: OnboardingObserver,
              fail_at: FaultPoint | None) -> StepOutcome:
    s, client = ctx.settings, ctx.client
    if fail_at is not None and fail_at == FaultPoint(step.name, "before"):
        raise InjectedFault(f"injected fault before step {step.name!r}")
    observer.step_started(client, index, total, step.name, step.title)
    if not step.always:
        mark_started(s, client, step.name, ctx.run_by)
    t0 = time.perf_counter()
    try:
        detail = step.run(ctx)
    except Exception as e:
        seconds = time.perf_counter() - t0
        observer.step_failed(client, index, total, step.name, step.title, seconds, e)
        if step.always:
            raise  # validation: OnboardingRefused carries the differences for the caller to print
        mark_finished(s, client, step.name, seconds, {"error": f"{type(e).__name__}: {e}"}, failed=True)
        raise OnboardingFailed(client, step.name, e) from e
    seconds = time.perf_counter() - t0
    if fail_at is not None and fail_at == FaultPoint(step.name, "after"):
        # Like a crash after the work: the step stays `started`, so the next attempt must redo it harmlessly.
        raise InjectedFault(f"injected fault after step {step.name!r} (work done, not recorded)")
    if not step.always:
        mark_finished(s, client, step.name, seconds, detail)
    observer.step_done(client, index, total, step.name, step.title, seconds, detail)
    return StepOutcome(step.name, step.title, "done", seconds, detail)
