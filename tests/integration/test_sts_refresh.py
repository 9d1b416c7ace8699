"""Self-refreshing STS credentials against a platform issuing 5-second credentials."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from sts_bridge import Client

pytestmark = pytest.mark.integration

SERVICE_WS = "gep-processing-results-a2s-service-workspace"


def test_put_list_loop_over_several_lifetimes_never_fails(
    short_lived_platform_env: dict[str, str], short_lived_platform: Any
) -> None:
    lifetime = short_lived_platform.sts_duration
    ws = Client.from_env().workspace(SERVICE_WS)
    s3 = ws.s3_client()
    short_lived_platform.reset_stats()
    deadline = time.monotonic() + 3.2 * lifetime
    ops = 0
    key = f"{ws.prefix}loop-{uuid.uuid4().hex}"
    while time.monotonic() < deadline:
        s3.put_object(Bucket=ws.bucket, Key=f"{key}/{ops}", Body=b"x")
        s3.list_objects_v2(Bucket=ws.bucket, Prefix=key, MaxKeys=5)
        ops += 1
        time.sleep(0.1)
    exchanges = short_lived_platform.api_stats()["sts_exchanges"]
    # windows of 1/3 of the lifetime: one exchange per ~2/3 lifetime, never per request
    assert 3 <= exchanges <= 7, (exchanges, ops)
    assert ops > 3 * exchanges
    for i in range(ops):
        s3.delete_object(Bucket=ws.bucket, Key=f"{key}/{i}")


def test_32_threads_at_expiry_cause_one_exchange(
    short_lived_platform_env: dict[str, str], short_lived_platform: Any
) -> None:
    ws = Client.from_env().workspace(SERVICE_WS)
    creds = ws.credentials()
    _, mandatory = ws.refreshing.windows_for(creds)
    # wait until the credentials are inside the mandatory window
    time.sleep(max(creds.remaining() - mandatory / 2, 0))
    short_lived_platform.reset_stats()
    barrier = threading.Barrier(32)
    keys: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            keys.append(ws.credentials().access_key)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(keys)) == 1 and keys[0] != creds.access_key
    assert short_lived_platform.api_stats()["sts_exchanges"] == 1
