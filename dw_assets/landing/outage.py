"""Riding out outages: a broker, coordinator or S3 endpoint that is away for a while is retried with backoff.

Only errors that say "not reachable now" are retried (connection refused, timeouts, a coordinator still loading);
anything else (a bad request, a reset topic, a full disk) propagates at once. After `budget_s` without success the
last error propagates with the time waited, so a dead dependency still stops the writer loudly.
"""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from confluent_kafka import KafkaError, KafkaException

from .watermarks import WatermarkTimeout

log = logging.getLogger(__name__)
T = TypeVar("T")

OUTAGE_BUDGET_S = 300.0  # how long landing waits for a dependency before it gives up
_KAFKA_TRANSIENT = {
    KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._TIMED_OUT, KafkaError._WAIT_COORD,
    KafkaError._RESOLVE, KafkaError._MSG_TIMED_OUT, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._NO_OFFSET,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def kafka_transient(err: KafkaError | None) -> bool:
    return err is not None and (err.code() in _KAFKA_TRANSIENT or (err.retriable() and not err.fatal()))


def is_transient(e: BaseException) -> bool:
    """True for errors of a dependency that is away or slow, not of the request."""
    if isinstance(e, KafkaException):
        return bool(e.args) and isinstance(e.args[0], KafkaError) and kafka_transient(e.args[0])
    if isinstance(e, WatermarkTimeout):
        return True
    try:  # S3 (boto3): connection problems and 5xx answers
        from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError
    except ImportError:  # pragma: no cover - boto3 is a dependency of the S3 store only
        return False
    if isinstance(e, (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return True
    if isinstance(e, ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or e.response.get("Error", {}).get("Code") in ("SlowDown", "RequestTimeout")
    return False


def ride_out(call: Callable[[], T], what: str, *, budget_s: float = OUTAGE_BUDGET_S,
             backoff_s: tuple[float, float] = (0.2, 5.0)) -> T:
    """`call()`, retried with exponential backoff while it fails with a transient error, for up to `budget_s`."""
    started = time.monotonic()
    delay = backoff_s[0]
    attempt = 0
    while True:
        try:
            return call()
        except Exception as e:
            waited = time.monotonic() - started
            if not is_transient(e) or waited + delay > budget_s:
                if attempt:
                    log.error("%s failed after %.0f s of retries: %s", what, waited, e)
                raise
            attempt += 1
            if attempt == 1 or attempt % 10 == 0:
                log.warning("%s: %s; retrying (%.0f s so far, giving up after %.0f s)", what, e, waited, budget_s)
            time.sleep(delay)
            delay = min(delay * 2, backoff_s[1])
