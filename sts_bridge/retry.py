"""``RetryPolicy``: when and how long the API and S3 boundaries wait before trying again.

One frozen type for both retry loops (``terrapi/api.py`` and
``s3/signed_http.py``); each boundary keeps its own numbers as its default
instance (:data:`API_RETRY`, :data:`S3_RETRY`). The policy only answers
questions ("may I try again?", "is this failure transient?", "how long do I
wait?"); the loops keep what is theirs: which calls are idempotent, the
one retry with a fresh token or fresh credentials, the stall timeout.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["API_DEADLINE", "API_RETRY", "S3_RETRY", "RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a transient failure.

    :param attempts: requests in all, the first one included (at least 1).
    :param backoff: the delay before the first retry; it doubles for each next one.
    :param max_delay: cap for one delay, ``Retry-After`` included.
    :param jitter: multiply each delay by a random factor in [0.5, 1.5), so
        that many clients failing together do not retry together.
    :param statuses: HTTP statuses worth a retry.
    :param codes: error codes (S3's ``<Code>``) worth a retry whatever the status.
    :param honour_retry_after: wait what the server's ``Retry-After`` says
        (capped at ``max_delay``) instead of the backoff.

    Connection errors are always transient; whether a call may be repeated
    at all (idempotence) is the caller's decision.
    """

    attempts: int
    backoff: float
    max_delay: float
    jitter: bool = False
    statuses: frozenset[int] = frozenset({500, 502, 503, 504})
    codes: frozenset[str] = frozenset()
    honour_retry_after: bool = True

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("RetryPolicy.attempts must be at least 1")
        if self.backoff < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    @property
    def retries(self) -> int:
        """Retries after the first attempt (``attempts - 1``)."""
        return self.attempts - 1

    def may_retry(self, failed: int) -> bool:
        """Whether another attempt follows ``failed`` failed attempts."""
        return failed < self.attempts

    def transient(self, status: int, code: str | None = None) -> bool:
        """Whether an answer with ``status`` (and S3 error ``code``) is worth a retry."""
        return status in self.statuses or (code is not None and code in self.codes)

    def delay(
        self,
        retry: int,
        retry_after: float | None = None,
        *,
        uniform: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry).

        ``retry_after`` is the server's ``Retry-After`` in seconds, when it
        sent one; ``uniform`` returns a number in [0, 1) for the jitter.
        """
        if self.honour_retry_after and retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        delay = min(self.backoff * 2.0**retry, self.max_delay)
        if self.jitter:
            delay *= 0.5 + uniform()
        return delay


#: The TerrAPI boundary: 4 attempts, 0.5 s doubling up to 20 s, ``Retry-After`` honoured.
API_RETRY = RetryPolicy(
    attempts=4,
    backoff=0.5,
    max_delay=20.0,
    statuses=frozenset({429, 500, 502, 503, 504}),
)

#: Seconds one TerrAPI call may take, every attempt and pause included: an API
#: that accepts connections and never answers (a stopped process) would
#: otherwise hold a command for 4 x 30 s. An STS exchange, and the credentials
#: cache lock held across it (sts_bridge.credentials.cache), never lasts longer.
API_DEADLINE = 45.0

#: The S3 boundary: 4 attempts, 1 s doubling up to 8 s with jitter; S3's
#: ``RequestTimeout`` and ``SlowDown`` codes are transient too.
S3_RETRY = RetryPolicy(
    attempts=4,
    backoff=1.0,
    max_delay=8.0,
    jitter=True,
    codes=frozenset({"RequestTimeout", "SlowDown"}),
    honour_retry_after=False,
)
