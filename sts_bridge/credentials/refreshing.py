"""Temporary S3 credentials: frozen snapshots, a zero-argument STS fetcher, refresh windows.

Modelled on botocore's ``RefreshableCredentials`` (two refresh windows, one
lock) and its ``AssumeRoleWithWebIdentityCredentialFetcher`` (one callable
that returns fresh credentials):

* **advisory window** (credentials live less than ``advisory_window``
  seconds): one thread tries the lock *without blocking* and refreshes; if the
  exchange fails the old credentials are kept (they are still valid) and a
  warning is logged. Other threads carry on with the current snapshot.
* **mandatory window** (less than ``mandatory_window`` seconds left, or
  expired): every thread blocks on the lock; a failed exchange raises
  :class:`~sts_bridge.errors.CredentialsError`.

The two windows give the credentials' :class:`~sts_bridge.clock.CredentialState`
(``STALE`` in the advisory window, ``INVALID`` in the mandatory one or when
there are none; :meth:`RefreshingS3Credentials.state_of`).

Whoever obtains the lock re-checks first, so 32 threads arriving at the
moment of expiry cause exactly one exchange. When a cross-process
:class:`CredentialStore` is attached, the exchange additionally happens
under its file lock and adopts credentials another process has just stored.

The default windows (120 s / 60 s) suit the platform's 15-minute STS
credentials; botocore's 15/10 minutes would refresh on every call. For
credentials that live only a few seconds (tests) the windows shrink to a
fraction of the lifetime (1/3 and 1/6).

:meth:`RefreshingS3Credentials.credentials_for` (presign: "credentials
living at least N more seconds") refreshes only when that buys a
*meaningful* longer life: the current credentials are kept when they live
``min(N, 0.9 * L)`` more seconds, ``L`` being their full lifetime. A
presign of 1 h with 15-minute credentials therefore makes one exchange per
~90 s of use instead of one per call (it could never get 1 h anyway: the
caller clamps the URL and says so), and the URL is never more than 10 %
shorter than what a fresh exchange would allow.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from sts_bridge._redact import remember_secret
from sts_bridge.clock import Clock, CredentialState, credential_state, utc_now
from sts_bridge.errors import CredentialsError, StsBridgeError

if TYPE_CHECKING:
    from sts_bridge.terrapi.api import TerrapiApi
    from sts_bridge.terrapi.storage_point import StoragePoint

__all__ = [
    "DEFAULT_ADVISORY_WINDOW",
    "DEFAULT_MANDATORY_WINDOW",
    "CredentialStore",
    "Fetcher",
    "RefreshingS3Credentials",
    "S3Credentials",
    "StsFetcher",
    "refresh_windows",
]

logger = logging.getLogger("sts_bridge.credentials.refreshing")

#: Refresh in the background this many seconds before expiry (15-minute credentials).
DEFAULT_ADVISORY_WINDOW = 120.0
#: Block and refresh (or fail) this many seconds before expiry.
DEFAULT_MANDATORY_WINDOW = 60.0
#: For short credentials the windows are at most these fractions of the lifetime.
_ADVISORY_FRACTION = 1 / 3
_MANDATORY_FRACTION = 1 / 6
#: ``credentials_for`` keeps credentials that still have this fraction of their lifetime.
_WORTHWHILE_FRACTION = 0.9


@dataclass(frozen=True)
class S3Credentials:
    """One set of S3 credentials (a frozen snapshot; ``repr`` hides the secrets).

    ``expiry`` is tz-aware UTC, ``None`` for static keys. ``issued_at`` is
    the local time they were obtained (used to size the refresh windows of
    short-lived credentials); it is not part of equality.
    """

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    expiry: datetime | None = None
    issued_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("expiry", "issued_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"S3Credentials.{name} must be timezone-aware")
        remember_secret(self.access_key, self.secret_key, self.token)

    def __repr__(self) -> str:
        expiry = self.expiry.isoformat() if self.expiry else None
        return (
            f"S3Credentials(access_key='***{self.access_key[-4:]}', secret_key='***', "
            f"token={'***' if self.token else None}, expiry={expiry!r})"
        )

    def remaining(self, now: datetime | None = None) -> float:
        """Seconds until expiry (``inf`` for static keys; negative once expired)."""
        if self.expiry is None:
            return float("inf")
        return (self.expiry - (now or utc_now())).total_seconds()

    @property
    def lifetime(self) -> float | None:
        """Total lifetime in seconds when known (``expiry - issued_at``)."""
        if self.expiry is None or self.issued_at is None:
            return None
        return max((self.expiry - self.issued_at).total_seconds(), 0.0)

    def to_botocore_metadata(self) -> dict[str, Any]:
        """The dict botocore's ``RefreshableCredentials.create_from_metadata`` expects."""
        expiry = self.expiry or datetime(9999, 1, 1, tzinfo=timezone.utc)
        return {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "token": self.token,
            "expiry_time": expiry.isoformat(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (contains the secret: only for private 0600 files)."""
        return {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "token": self.token,
            "expiry": self.expiry.timestamp() if self.expiry else None,
            "issued_at": self.issued_at.timestamp() if self.issued_at else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> S3Credentials:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed document."""
        if not isinstance(data, dict):
            raise ValueError("credentials are not an object")
        access, secret, token = data.get("access_key"), data.get("secret_key"), data.get("token")
        if not isinstance(access, str) or not isinstance(secret, str) or not access:
            raise ValueError("access_key/secret_key missing")
        if token is not None and not isinstance(token, str):
            raise ValueError("token is not a string")

        def stamp(value: Any) -> datetime | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError("timestamp is not a number")
            return datetime.fromtimestamp(float(value), timezone.utc)

        return cls(access, secret, token, stamp(data.get("expiry")), stamp(data.get("issued_at")))

    @classmethod
    def from_api(cls, model: Any, *, now: datetime | None = None) -> S3Credentials:
        """Build from the generated ``IStorageSTS`` model (``use_token`` false: no token)."""
        access = getattr(model, "access_key", None)
        secret = getattr(model, "secret_key", None)
        if not access or not secret:
            raise CredentialsError(
                "the API returned STS credentials without an access key or secret key",
                hint="report this to the platform operators",
            )
        use_token = getattr(model, "use_token", None)
        token = getattr(model, "token", None)
        if use_token is False:
            token = None
        expiry = getattr(model, "expiration", None)
        if isinstance(expiry, datetime) and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=timezone.utc)
        return cls(
            access_key=str(access),
            secret_key=str(secret),
            token=str(token) if token else None,
            expiry=expiry if isinstance(expiry, datetime) else None,
            issued_at=now or utc_now(),
        )


#: A zero-argument callable returning fresh credentials (raises on failure).
Fetcher = Callable[[], S3Credentials]


class StsFetcher:
    """The STS exchange of one workspace: ``fetcher() -> S3Credentials``.

    Calls ``api.storage_sts(name)``. The storage point returned with the
    credentials is kept in :attr:`storage_point` (the newest one seen).
    """

    def __init__(self, api: TerrapiApi, workspace: str, *, clock: Clock | None = None) -> None:
        self.api = api
        self.workspace = workspace
        self._clock = clock or utc_now
        self.storage_point: StoragePoint | None = None
        self.calls = 0

    def __repr__(self) -> str:
        return f"StsFetcher(workspace={self.workspace!r})"

    def __call__(self) -> S3Credentials:
        from sts_bridge.terrapi.storage_point import StoragePoint

        self.calls += 1
        answer = self.api.storage_sts(self.workspace)
        creds = S3Credentials.from_api(answer.credentials, now=self._clock())
        if answer.storage is not None:
            self.storage_point = StoragePoint.from_api(answer.storage)
        return creds


class CredentialStore(Protocol):
    """A cross-process store of one workspace's credentials (see credentials.cache)."""

    def locked(self) -> contextlib.AbstractContextManager[None]: ...

    def load(self) -> S3Credentials | None: ...

    def save(self, credentials: S3Credentials) -> None: ...


def refresh_windows(
    lifetime: float | None, advisory: float, mandatory: float
) -> tuple[float, float]:
    """The (advisory, mandatory) windows for credentials living ``lifetime`` seconds.

    Capped at 1/3 and 1/6 of the lifetime so that 5-second credentials are
    usable for a few seconds instead of being refreshed on every call.
    """
    if lifetime is None or lifetime <= 0:
        return advisory, mandatory
    return (
        min(advisory, lifetime * _ADVISORY_FRACTION),
        min(mandatory, lifetime * _MANDATORY_FRACTION),
    )


class RefreshingS3Credentials:
    """Credentials that refresh themselves: ask :meth:`get` for a valid snapshot.

    :param fetcher: zero-argument callable returning new :class:`S3Credentials`.
    :param advisory_window: seconds before expiry to refresh without blocking.
    :param mandatory_window: seconds before expiry below which refresh is required.
    :param clock: tz-aware "now" (injectable for tests).
    :param store: optional cross-process :class:`CredentialStore`.
    :param initial: credentials already obtained (e.g. with the workspace description).
    """

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        advisory_window: float = DEFAULT_ADVISORY_WINDOW,
        mandatory_window: float = DEFAULT_MANDATORY_WINDOW,
        clock: Clock | None = None,
        store: CredentialStore | None = None,
        initial: S3Credentials | None = None,
    ) -> None:
        if mandatory_window < 0 or advisory_window < mandatory_window:
            raise ValueError("need advisory_window >= mandatory_window >= 0")
        self._fetcher = fetcher
        self.advisory_window = float(advisory_window)
        self.mandatory_window = float(mandatory_window)
        self._clock: Clock = clock or utc_now
        self.store = store
        # One lock for the whole object: one exchange at a time across threads.
        self._lock = threading.Lock()
        self._current: S3Credentials | None = initial
        self.exchanges = 0  # fetcher calls made by this object

    def __repr__(self) -> str:
        current = self._current
        expiry = current.expiry.isoformat() if current and current.expiry else None
        return f"RefreshingS3Credentials(state={self.state!r}, expiry={expiry!r})"

    # -- state ---------------------------------------------------------------

    def now(self) -> datetime:
        return self._clock()

    def windows_for(self, creds: S3Credentials | None) -> tuple[float, float]:
        """(advisory, mandatory) windows in seconds for ``creds``."""
        lifetime = creds.lifetime if creds is not None else None
        return refresh_windows(lifetime, self.advisory_window, self.mandatory_window)

    def state_of(self, creds: S3Credentials | None) -> CredentialState:
        """``FRESH``, ``STALE`` (advisory window) or ``INVALID`` (mandatory window, or none)."""
        if creds is None:
            return CredentialState.INVALID
        advisory, mandatory = self.windows_for(creds)
        return credential_state(creds.expiry, self.now(), advisory=advisory, mandatory=mandatory)

    @property
    def state(self) -> CredentialState:
        """The :class:`CredentialState` of the current snapshot (``INVALID`` when none)."""
        return self.state_of(self._current)

    @property
    def current(self) -> S3Credentials | None:
        """The snapshot held now, possibly stale (no refresh)."""
        return self._current

    # -- public operations -------------------------------------------------------

    def get(self) -> S3Credentials:
        """A valid frozen snapshot, refreshed when inside a refresh window.

        Raises :class:`CredentialsError` (or the API/auth error that caused
        it) when credentials are in the mandatory window and cannot be refreshed.
        """
        creds = self._current
        state = self.state_of(creds)
        if state is CredentialState.FRESH:
            assert creds is not None
            return creds
        if state is CredentialState.INVALID:
            with self._lock:
                return self._refresh_locked(mandatory=True, forced=False, min_lifetime=None)
        # Stale: one thread refreshes, the others keep using the current snapshot.
        if not self._lock.acquire(blocking=False):
            assert creds is not None
            return creds
        try:
            return self._refresh_locked(mandatory=False, forced=False, min_lifetime=None)
        finally:
            self._lock.release()

    def refresh(self, min_lifetime: float | None = None) -> S3Credentials:
        """Obtain new credentials now (blocking), or ones living ``min_lifetime`` s.

        With ``min_lifetime`` the current credentials are kept when they live
        long enough, or when a new exchange would not buy a meaningfully
        longer life (see :meth:`lives_long_enough`); otherwise new ones are
        obtained (if the platform issues shorter ones, the newest are
        returned anyway). Raises :class:`CredentialsError` when the exchange
        fails.
        """
        with self._lock:
            if min_lifetime is not None:
                creds = self._current
                if creds is not None and self.lives_long_enough(creds, min_lifetime):
                    return creds
            return self._refresh_locked(mandatory=True, forced=True, min_lifetime=min_lifetime)

    def replace_refused(self, refused: S3Credentials) -> S3Credentials:
        """New credentials instead of ``refused``, which the store has just rejected.

        The store says "these credentials are bad" (an unknown access key, a
        signature it cannot check, a token it calls expired) although by our
        clock they are valid: radosgw restarted and forgot them, or a cached
        set was damaged. They are dropped here and in the cross-process store
        (unless another process has already replaced them), and one new set is
        fetched. When another thread has already replaced ``refused``, its
        replacement is returned without another exchange. Raises
        :class:`CredentialsError` (or the API/auth error behind it) when the
        exchange fails.
        """
        with self._lock:
            current = self._current
            if current is not None and current != refused:
                return current  # another thread replaced them already
            try:
                new = self._replacement(refused)
            except StsBridgeError:
                raise
            except Exception as exc:
                raise CredentialsError(
                    f"could not obtain STS credentials: {type(exc).__name__}: {exc}",
                    hint="check the workspace name and your login, then try again",
                ) from exc
            logger.info("the store refused the cached S3 credentials; using new ones")
            self._current = new
            return new

    def credentials_for(self, min_lifetime: float) -> S3Credentials:
        """Valid credentials that, if at all possible, live ``min_lifetime`` more seconds.

        Refreshes first only when that buys a meaningfully longer life
        (:meth:`lives_long_enough`); the caller clamps what it signs to
        ``remaining()`` and says so.
        """
        creds = self.get()
        if self.lives_long_enough(creds, min_lifetime):
            return creds
        return self.refresh(min_lifetime)

    def _replacement(self, refused: S3Credentials) -> S3Credentials:
        store = self.store
        if store is None:
            return self._fetch()
        with store.locked():
            cached = store.load()
            if (
                cached is not None
                and cached != refused
                and self.state_of(cached) is CredentialState.FRESH
            ):
                return cached  # another process replaced them already
            new = self._fetch()
            store.save(new)
            return new

    def lives_long_enough(self, creds: S3Credentials, min_lifetime: float) -> bool:
        """Whether ``creds`` may serve a request for ``min_lifetime`` more seconds.

        True when they live ``min(min_lifetime, 0.9 * L)`` more seconds (and
        are outside the mandatory window), ``L`` being their full lifetime
        when known: beyond 90 % of ``L`` a new exchange adds less than 10 %,
        and the platform's credentials (15 minutes) can never satisfy a
        longer request anyway. With ``L`` unknown, ``min_lifetime`` itself.
        """
        needed = min_lifetime
        lifetime = creds.lifetime
        if lifetime is not None and lifetime > 0:
            needed = min(needed, lifetime * _WORTHWHILE_FRACTION)
        return creds.remaining(self.now()) >= max(needed, self.windows_for(creds)[1])

    # -- internals -------------------------------------------------------------

    def _refresh_locked(
        self, *, mandatory: bool, forced: bool, min_lifetime: float | None
    ) -> S3Credentials:
        """With ``self._lock`` held: re-check, then exchange (under the store's lock).

        ``forced``: a new set is wanted even when the current one is fresh
        (living ``min_lifetime`` more seconds when that is given).
        """
        current = self._current
        if not forced and self.state_of(current) is CredentialState.FRESH:
            assert current is not None
            return current  # another thread refreshed while we waited
        try:
            new = self._obtain(current, forced=forced, min_lifetime=min_lifetime)
        except Exception as exc:
            if not mandatory and self.state_of(current) is not CredentialState.INVALID:
                assert current is not None
                logger.warning(
                    "refreshing the S3 credentials failed; using the current ones for "
                    "%.0f more seconds: %s",
                    current.remaining(self.now()),
                    exc,
                )
                return current
            if isinstance(exc, StsBridgeError):
                raise
            raise CredentialsError(
                f"could not obtain STS credentials: {type(exc).__name__}: {exc}",
                hint="check the workspace name and your login, then try again",
            ) from exc
        self._current = new
        return new

    def _obtain(
        self, current: S3Credentials | None, *, forced: bool, min_lifetime: float | None
    ) -> S3Credentials:
        store = self.store
        if store is None:
            return self._fetch()
        with store.locked():
            cached = store.load()
            if cached is not None and self._adoptable(cached, current, forced, min_lifetime):
                logger.debug("using STS credentials another process has just cached")
                return cached
            new = self._fetch()
            store.save(new)
            return new

    def _adoptable(
        self,
        cached: S3Credentials,
        current: S3Credentials | None,
        forced: bool,
        min_lifetime: float | None,
    ) -> bool:
        if self.state_of(cached) is not CredentialState.FRESH:
            return False
        if not forced:
            return True
        if current is not None and cached == current:
            return False  # a forced refresh wants something newer than what we hold
        return min_lifetime is None or self.lives_long_enough(cached, min_lifetime)

    def _fetch(self) -> S3Credentials:
        new = self._fetcher()
        self.exchanges += 1
        if new.issued_at is None:
            new = S3Credentials(new.access_key, new.secret_key, new.token, new.expiry, self.now())
        if new.expiry is not None and new.remaining(self.now()) <= 0:
            raise CredentialsError(
                "the API issued STS credentials that had already expired by this machine's "
                f"clock ({-new.remaining(self.now()):.0f} s ago)",
                hint="synchronise this machine's clock (e.g. with NTP)",
            )
        logger.debug(
            "obtained STS credentials (expire %s)",
            new.expiry.isoformat() if new.expiry else "never",
        )
        return new
