"""A workspace described again (its cached endpoint cannot be reached) closes the
S3 client and the filesystem connections it made for the old endpoint when it
replaces them.

The S3 client factory is replaced by one that records which clients were
closed (the integration test tests/integration/test_closing.py counts real
connections for refused credentials; an unreachable cached endpoint is this
boundary's job to fake).
"""

from __future__ import annotations

from typing import Any

import pytest

from sts_bridge.errors import StorageUnavailableError
from sts_bridge.terrapi.storage_point import StoragePoint
from sts_bridge.workspace import Workspace


class RecordedClient:
    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_new_endpoint_closes_the_connections_to_the_old_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    made: list[RecordedClient] = []

    def s3_client(credentials: Any, *, endpoint_url: str, **_: Any) -> RecordedClient:
        made.append(RecordedClient(endpoint_url))
        return made[-1]

    monkeypatch.setattr("sts_bridge.interop.boto.s3_client", s3_client)
    cached = StoragePoint("ws", "bucket", "p/", "http://127.0.0.1:9")
    moved = StoragePoint("ws", "bucket", "p/", "http://127.0.0.1:9000")
    ws = Workspace(cached, object(), cache_dir=tmp_path, resolve_again=lambda: moved)  # type: ignore[arg-type]

    def operation() -> str:
        client = ws.s3_client()
        if client.endpoint_url == cached.endpoint_url:
            raise StorageUnavailableError("cannot reach the store")
        return str(client.endpoint_url)

    filesystem = ws.filesystem()
    dropped: list[object] = []
    monkeypatch.setattr(filesystem, "close_connections", lambda: dropped.append(filesystem))
    assert ws._endpoint_checked(operation) == moved.endpoint_url
    assert dropped == [filesystem] and ws.filesystem() is not filesystem
    old, new = made
    assert old.endpoint_url == cached.endpoint_url and old.closed
    assert new.endpoint_url == moved.endpoint_url and not new.closed
    ws.close()
    assert new.closed
