"""Bounded retry with backoff for Delta commits that lose a race (deltalake raises CommitFailedError).

Concurrent writers on one table (two appliers, or apply next to compaction) are resolved optimistically: the
loser re-reads the table and redoes its step. The step must be idempotent, which every lake write here is.
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from deltalake.exceptions import CommitFailedError

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BASE_DELAY_S = 0.05
MAX_DELAY_S = 2.0


class CommitRetriesExhausted(RuntimeError):
    """A step still lost the commit race after MAX_ATTEMPTS tries."""


def with_commit_retry(step: Callable[[], T], what: str, attempts: int = MAX_ATTEMPTS) -> T:
    """Run `step` (which must re-read the table itself) until its commit wins; full-jitter backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return step()
        except CommitFailedError as e:
            if attempt == attempts:
                raise CommitRetriesExhausted(f"{what}: commit failed {attempts} times, last: {e}") from e
            delay = random.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2 ** attempt))
            log.info("%s: concurrent commit (%s); retry %d in %.2fs", what, str(e).splitlines()[0], attempt, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
