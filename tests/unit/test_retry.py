"""sts_bridge.retry: the one retry policy type of the API and S3 boundaries."""

from __future__ import annotations

import dataclasses

import pytest

from sts_bridge.retry import API_RETRY, S3_RETRY, RetryPolicy


def test_api_policy_doubles_from_half_a_second_up_to_its_cap() -> None:
    assert [API_RETRY.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0]
    assert API_RETRY.attempts == 4 and API_RETRY.retries == 3


def test_retry_after_replaces_the_backoff_capped_and_never_negative() -> None:
    assert API_RETRY.delay(0, retry_after=7.0) == 7.0
    assert API_RETRY.delay(0, retry_after=9999.0) == 20.0
    assert API_RETRY.delay(2, retry_after=-3.0) == 0.0
    # The S3 boundary does not read Retry-After: its backoff stays.
    assert S3_RETRY.delay(0, retry_after=7.0, uniform=lambda: 0.5) == 1.0


def test_s3_policy_jitters_between_half_and_one_and_a_half_times_the_backoff() -> None:
    assert [S3_RETRY.delay(n, uniform=lambda: 0.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert S3_RETRY.delay(3, uniform=lambda: 0.999) == pytest.approx(8.0 * 1.499)


def test_transient_answers_by_status_and_by_s3_code() -> None:
    assert API_RETRY.transient(429) and API_RETRY.transient(503)
    assert not API_RETRY.transient(404) and not API_RETRY.transient(400, "SlowDown")
    assert not S3_RETRY.transient(429)
    assert S3_RETRY.transient(400, "RequestTimeout") and S3_RETRY.transient(503, "SlowDown")
    assert not S3_RETRY.transient(403, "AccessDenied")


def test_may_retry_counts_failed_attempts() -> None:
    policy = dataclasses.replace(API_RETRY, attempts=2)
    assert [policy.may_retry(n) for n in range(4)] == [True, True, False, False]


def test_nonsense_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(attempts=0, backoff=1.0, max_delay=2.0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(attempts=1, backoff=-1.0, max_delay=2.0)
