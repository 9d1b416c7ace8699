"""Cross-process cache of STS credentials (and the workspace description).

One private file (0600, written atomically) per (API URL, workspace,
principal subject) under ``<cache_dir>/sts/``. It holds the unexpired
credentials *and* the :class:`~sts_bridge.terrapi.storage_point.StoragePoint`, so a
warm CLI run (``sts-bridge presign ...``) needs neither the identity
provider nor the API: the principal is known from the cached access token's
``sub`` claim, the workspace from the file, the credentials too.

The exchange itself happens under a file lock next to the data (see
:meth:`RefreshingS3Credentials._obtain`), followed by a re-read: four
processes starting together make one exchange, the other three adopt it.
An exchange lasts at most the API's deadline
(:data:`~sts_bridge.retry.API_DEADLINE`, every attempt included),
so the lock is never held longer across a network call; a process that
waits longer than that plus a margin (:data:`LOCK_TIMEOUT`: the holder is
stopped or stuck) goes on without the lock and makes its own exchange
instead of failing (the lock only saves exchanges; writes are atomic).

A corrupt, foreign or unreadable file is ignored with a warning and
replaced on the next exchange; a failure to write is a warning too (the
cache only saves calls, it is never needed for correctness).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sts_bridge._files import LockTimeout, atomic_write, file_lock, read_cache_document
from sts_bridge.credentials.refreshing import S3Credentials
from sts_bridge.retry import API_DEADLINE
from sts_bridge.terrapi.storage_point import StoragePoint

__all__ = ["CredentialCache"]

logger = logging.getLogger("sts_bridge.credentials.cache")

#: Seconds to wait for another process's exchange before going on without the lock.
LOCK_TIMEOUT = API_DEADLINE + 15.0

_FORMAT = "sts-bridge/sts-credentials"
_VERSION = 1


class CredentialCache:
    """The cache file of one workspace for one principal on one API.

    Implements the ``CredentialStore`` protocol of
    :class:`~sts_bridge.credentials.refreshing.RefreshingS3Credentials`
    (``locked()``, ``load()``, ``save()``). :attr:`storage_point` is written
    alongside the credentials; set it before the first :meth:`save`.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        api_url: str,
        workspace: str,
        subject: str,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.key: dict[str, str] = {
            "api_url": api_url.rstrip("/"),
            "workspace": workspace,
            "subject": subject,
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        self.path = Path(cache_dir) / "sts" / f"{digest[:32]}.json"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self.storage_point: StoragePoint | None = None

    def __repr__(self) -> str:
        return f"CredentialCache(path={str(self.path)!r}, workspace={self.key['workspace']!r})"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        held = contextlib.ExitStack()
        try:
            held.enter_context(file_lock(self.lock_path, timeout=self.lock_timeout))
        except LockTimeout:
            # No exchange lasts this long: the holder is stopped or stuck.
            logger.warning(
                "another sts-bridge process has held %s for more than %.0f s; going on without it",
                self.lock_path,
                self.lock_timeout,
            )
        with held:
            yield

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold the cross-process lock of this cache file (see the module: never for long)."""
        return self._locked()

    def _read(self) -> dict[str, Any] | None:
        return read_cache_document(
            self.path,
            format=_FORMAT,
            version=_VERSION,
            key=self.key,
            what="credentials cache",
            foreign="another workspace or version",
        )

    def load_entry(self) -> tuple[StoragePoint | None, S3Credentials | None]:
        """(storage point, credentials) from the file; each ``None`` when absent or corrupt."""
        data = self._read()
        if data is None:
            return None, None
        point: StoragePoint | None = None
        creds: S3Credentials | None = None
        try:
            if data.get("storage_point") is not None:
                point = StoragePoint.from_dict(data["storage_point"])
            if data.get("credentials") is not None:
                creds = S3Credentials.from_dict(data["credentials"])
        except (TypeError, ValueError, OverflowError, OSError):
            logger.warning("ignoring corrupt credentials cache %s (it will be replaced)", self.path)
            return None, None
        if point is not None and self.storage_point is None:
            self.storage_point = point
        return point, creds

    def load(self) -> S3Credentials | None:
        """The cached credentials (maybe expired: the caller judges), or ``None``."""
        return self.load_entry()[1]

    def load_storage_point(self) -> StoragePoint | None:
        """The cached workspace description, or ``None``."""
        return self.load_entry()[0]

    def save(self, credentials: S3Credentials) -> None:
        """Write ``credentials`` (with :attr:`storage_point`) atomically, 0600.

        A write failure is logged, not raised: the cache only saves calls.
        """
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "key": self.key,
            "storage_point": self.storage_point.to_dict() if self.storage_point else None,
            "credentials": credentials.to_dict(),
        }
        try:
            atomic_write(self.path, json.dumps(document).encode("utf-8"))
        except OSError as exc:
            logger.warning("cannot write the credentials cache %s: %s", self.path, exc.strerror)

    def clear(self) -> None:
        """Delete the cache file (e.g. after the store refused the credentials)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
