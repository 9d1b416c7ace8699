"""The token cache: one private file per (issuer, client id, scopes, audience).

``<cache_dir>/tokens/<sha256 of the key>.json`` (mode 0600, written
atomically) holds the access, refresh and ID tokens and the expiry; a
``.lock`` file next to it serialises refreshes between processes. A file
that cannot be parsed, belongs to another key or to another user is ignored
with a warning (and overwritten by the next login), never a crash loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sts_bridge._files import LockTimeout, atomic_write, file_lock, read_cache_document
from sts_bridge.auth.base import Token
from sts_bridge.errors import TokenCacheError

__all__ = ["TokenCache"]

logger = logging.getLogger("sts_bridge.auth")

_FORMAT = "sts-bridge-token-cache"
_VERSION = 1


class TokenCache:
    """A cross-process token cache file for one (issuer, client, scopes, audience)."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        *,
        issuer: str,
        client_id: str,
        scopes: Sequence[str] = (),
        audience: str | None = None,
    ) -> None:
        self.key: dict[str, Any] = {
            "issuer": issuer.rstrip("/"),
            "client_id": client_id,
            "scopes": sorted(set(scopes)),
            "audience": audience,
        }
        digest = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()
        self.path = Path(cache_dir) / "tokens" / f"{digest[:32]}.json"
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"TokenCache(path={str(self.path)!r}, client_id={self.key['client_id']!r})"

    @contextlib.contextmanager
    def locked(self, timeout: float = 120.0) -> Iterator[None]:
        """Hold the cross-process lock of this cache file."""
        try:
            with file_lock(self.lock_path, timeout=timeout):
                yield
        except LockTimeout as exc:
            raise TokenCacheError(
                f"another sts-bridge process has held the token cache lock {self.lock_path} "
                f"for more than {timeout:.0f} s",
                hint="wait for it to finish, or delete the .lock file if no sts-bridge runs",
            ) from exc

    def load(self) -> Token | None:
        """The cached token, or ``None`` when absent, unreadable or foreign (warned)."""
        data = read_cache_document(
            self.path,
            format=_FORMAT,
            version=_VERSION,
            key=self.key,
            what="token cache",
            foreign="another client or version",
        )
        if data is None:
            return None
        try:
            return Token.from_dict(data.get("token") or {})
        except (TypeError, ValueError, OverflowError, OSError):
            logger.warning("ignoring corrupt token cache %s (it will be replaced)", self.path)
            return None

    def save(self, token: Token) -> None:
        """Write ``token`` atomically (0600). Raises :class:`TokenCacheError` on failure."""
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "key": self.key,
            "token": token.to_dict(),
        }
        try:
            atomic_write(self.path, json.dumps(document).encode("utf-8"))
        except OSError as exc:
            raise TokenCacheError(
                f"cannot write the token cache {self.path}: {exc.strerror}",
                hint="check the permissions of STS_BRIDGE_CACHE_DIR, or point it elsewhere",
            ) from exc

    def delete(self) -> bool:
        """Remove the cache file; ``True`` when there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TokenCacheError(
                f"cannot delete the token cache {self.path}: {exc.strerror}"
            ) from exc
        return True
