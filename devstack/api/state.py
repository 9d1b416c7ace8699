"""Process-wide state of the reference server (one app per process)."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .policy import WorkspacePolicy
from .storage import S3Backend


class Counters:
    """Requests per operation / path / status, STS exchanges, presigned links."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_operation: Counter[str] = Counter()
            self.by_path: Counter[str] = Counter()
            self.by_status: Counter[str] = Counter()
            self.sts_exchanges = 0
            self.presigned_urls = 0

    def count_request(self, method: str, path: str, operation: str | None, status: int) -> None:
        with self._lock:
            self.total += 1
            self.by_path[f"{method} {path}"] += 1
            self.by_status[str(status)] += 1
            if operation:
                self.by_operation[operation] += 1

    def count_sts(self) -> None:
        with self._lock:
            self.sts_exchanges += 1

    def count_presign(self) -> None:
        with self._lock:
            self.presigned_urls += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": self.total,
                "by_operation": dict(self.by_operation),
                "by_path": dict(self.by_path),
                "by_status": dict(self.by_status),
                "sts_exchanges": self.sts_exchanges,
                "presigned_urls": self.presigned_urls,
            }


@dataclass
class ServerState:
    policy: WorkspacePolicy
    s3: S3Backend
    public_url: str  # the API base URL, e.g. http://127.0.0.1:PORT/core
    s3_endpoint: str  # where the API reaches radosgw
    s3_public_url: str  # service_url / end_point given to clients (ends with '/')
    counters: Counters = field(default_factory=Counters)


_state: ServerState | None = None


def set_state(state: ServerState) -> None:
    global _state
    _state = state


def get_state() -> ServerState:
    if _state is None:
        raise RuntimeError("the reference server is not configured (create_app first)")
    return _state
