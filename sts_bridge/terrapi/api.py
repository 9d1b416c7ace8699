"""``TerrapiApi``: the only module that drives the generated ``terrapi_client``.

Three jobs, each in one place:

* **bearer per call** -- the generated client reads
  ``Configuration.access_token`` and never calls a refresh hook for bearer
  auth, so :meth:`TerrapiApi._call` asks the :class:`TokenCredentials` for a
  valid token before *every* request and passes it as ``_request_auth``;
* **retries** -- idempotent calls are retried on 429/5xx and connection
  errors as a :class:`~sts_bridge.retry.RetryPolicy` says (default
  :data:`~sts_bridge.retry.API_RETRY`: exponential backoff, honouring
  ``Retry-After``); a 401 is
  retried once with a fresh token (``invalidate()`` then ``token()``);
* **errors** -- ``ApiException`` becomes ``NotAuthenticatedError`` (401),
  ``PermissionDeniedError`` (403), ``NotFoundError`` (404) or
  ``ApiUnavailableError`` (5xx/429/connection), with the ProblemDetails
  ``detail`` in the message (redacted; never a token).

``terrapi_client`` is imported on first use, not at import time: a warm CLI
run that finds its credentials in the cache never pays for it.
"""

from __future__ import annotations

import contextlib
import copy
import email.utils
import importlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from sts_bridge._redact import redact
from sts_bridge._tls import certificate_failure, handshake_failure
from sts_bridge.clock import Clock, utc_now
from sts_bridge.errors import (
    ApiError,
    ApiUnavailableError,
    NotAuthenticatedError,
    NotFoundError,
    PermissionDeniedError,
)
from sts_bridge.retry import API_DEADLINE, API_RETRY, RetryPolicy

if TYPE_CHECKING:
    from sts_bridge.auth import TokenCredentials

__all__ = ["TerrapiApi"]

logger = logging.getLogger("sts_bridge.terrapi.api")

T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0
#: Seconds one call may take, every attempt and pause included (see API_DEADLINE).
DEFAULT_DEADLINE = API_DEADLINE


def _generated(module: str = "") -> Any:
    """The generated package (or one of its modules), imported on first use."""
    return importlib.import_module("terrapi_client" + (f".{module}" if module else ""))


def _retry_after(headers: Any, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), else None."""
    if not headers:
        return None
    try:
        value = headers.get("Retry-After")
    except AttributeError:
        return None
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    reference = now if now is not None else utc_now()
    return max((when - reference).total_seconds(), 0.0)


def _problem_detail(exc: Any) -> str | None:
    """The ProblemDetails ``detail`` (or ``title``) of an ``ApiException``, redacted."""
    data = getattr(exc, "data", None)
    detail = getattr(data, "detail", None) or getattr(data, "title", None)
    if not detail:
        body = getattr(exc, "body", None)
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        if isinstance(body, str) and body.strip():
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                detail = parsed.get("detail") or parsed.get("title")
            elif len(body) < 200:
                detail = body.strip()
    if not detail:
        return None
    return redact(str(detail))[:500]


def _timed_out(exc: BaseException) -> bool:
    """A request that was sent (or connected) and got no answer in time."""
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError

    reason = getattr(exc, "reason", None)  # urllib3's MaxRetryError wraps the cause
    for cause in (exc, reason):
        if isinstance(cause, NewConnectionError):  # a ConnectTimeoutError in urllib3's tree
            return False
        if isinstance(cause, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)):
            return True
    return False


class TerrapiApi:
    """The TerrAPI User and Storage calls sts-bridge needs.

    :param api_url: API base, e.g. ``https://api.example/core``.
    :param credentials: a :class:`~sts_bridge.auth.TokenCredentials` (``token()``,
        ``invalidate()``).
    :param verify: ``True``, ``False`` (no TLS verification) or a CA bundle path.
    :param retry: when and how long idempotent calls are retried on
        429/5xx/connection errors (default :data:`~sts_bridge.retry.API_RETRY`).
    :param timeout: seconds per request (connect and read).
    :param deadline: seconds per call, all attempts and pauses included
        (default :data:`DEFAULT_DEADLINE`); no retry starts after it.
    :param sleep: injectable ``time.sleep`` (tests).
    :param clock: tz-aware "now" for ``Retry-After`` dates (injectable for tests).
    :param pool_manager: a urllib3 ``PoolManager``-like transport (tests, proxies).
    """

    def __init__(
        self,
        api_url: str,
        credentials: TokenCredentials,
        *,
        verify: bool | str = True,
        retry: RetryPolicy = API_RETRY,
        timeout: float = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = utc_now,
        pool_manager: Any = None,
    ) -> None:
        if not api_url:
            raise ValueError("api_url is required")
        self.api_url = api_url.rstrip("/")
        self.credentials = credentials
        self.verify = verify
        self.retry = retry
        self.timeout = timeout
        self.deadline = deadline
        self._sleep = sleep
        self._clock = clock
        self._pool_manager = pool_manager
        self._api_client: Any = None
        self._init_lock = threading.Lock()
        self.calls = 0  # HTTP requests sent (attempts included)

    def __repr__(self) -> str:
        return f"TerrapiApi(api_url={self.api_url!r}, verify={self.verify!r})"

    # -- the generated client, built on first use ---------------------------------

    def _client(self) -> Any:
        if self._api_client is not None:
            return self._api_client
        with self._init_lock:
            if self._api_client is None:
                import urllib3

                terrapi_client = _generated()

                configuration = terrapi_client.Configuration(host=self.api_url)
                if self.verify is False:
                    configuration.verify_ssl = False
                else:
                    configuration.verify_ssl = True
                    if isinstance(self.verify, str):
                        configuration.ssl_ca_cert = self.verify
                # Our own loop retries (with Retry-After and a fresh token); urllib3 must not.
                configuration.retries = urllib3.util.Retry(
                    total=None, connect=0, read=0, status=0, other=0, redirect=3
                )
                api_client = terrapi_client.ApiClient(configuration)
                if self._pool_manager is not None:
                    api_client.rest_client.pool_manager = self._pool_manager
                self._api_client = api_client
        return self._api_client

    def with_credentials(self, credentials: TokenCredentials) -> TerrapiApi:
        """The same API for another principal, over this object's connection pool.

        A service acting for many users holds one pool: each user's object
        sends that user's bearer token (per call, as always) through it.
        Closing any of them closes the shared pool.
        """
        self._client()  # built once, here, so the twin shares it
        twin = copy.copy(self)
        twin.credentials = credentials
        twin.calls = 0
        return twin

    def close(self) -> None:
        """Release the HTTP connection pool."""
        client, self._api_client = self._api_client, None
        if client is not None:
            with contextlib.suppress(Exception):  # best effort on shutdown
                client.rest_client.pool_manager.clear()

    def _storage(self) -> Any:
        return _generated().StorageApi(self._client())

    def _user(self) -> Any:
        return _generated().UserApi(self._client())

    # -- the calls ------------------------------------------------------------

    def user_info(self) -> Any:
        """``GET /v2/user/info`` -> ``PrincipalContext``."""
        return self._call(
            "getting your user information", lambda **kw: self._user().v2_user_info_get(**kw)
        )

    def platforms(self) -> Any:
        """``GET /v2/user/platforms`` -> untyped JSON."""
        return self._call(
            "listing your platforms", lambda **kw: self._user().v2_user_platforms_get(**kw)
        )

    def workspaces(self) -> list[Any]:
        """``GET /v2/storage/workspaces`` -> list of ``SelfInfo`` (workspaces only)."""
        items = self._call(
            "listing your workspaces", lambda **kw: self._storage().get_workspaces(**kw)
        )
        return list(items or [])

    def workspace_names(self) -> list[str]:
        """The names of the principal's workspaces, sorted."""
        return sorted({str(item.name) for item in self.workspaces() if getattr(item, "name", None)})

    def workspace(self, name: str) -> Any:
        """``GET /v2/storage/workspaces/{name}`` -> ``IWorkspace``."""
        return self._call(
            f"getting workspace {name!r}",
            lambda **kw: self._storage().get_workspace_by_id(name, **kw),
            resource=f"workspace {name!r}",
        )

    def storage_sts(self, name: str) -> Any:
        """``GET /v2/storage/token?storagePointId=name`` -> ``StsStorage``."""
        return self._call(
            f"getting STS credentials for workspace {name!r}",
            lambda **kw: self._storage().get_storage_sts(name, **kw),
            resource=f"workspace {name!r}",
        )

    # -- the one place where requests are sent ------------------------------------

    def _call(
        self,
        what: str,
        operation: Callable[..., T],
        *,
        idempotent: bool = True,
        resource: str | None = None,
    ) -> T:
        from urllib3.exceptions import HTTPError as Urllib3Error

        ApiException = _generated("exceptions").ApiException

        attempt = 0
        token_refreshed = False
        ends = time.monotonic() + self.deadline

        def may_retry(delay: float = 0.0) -> bool:
            # a retry must have a real chance to finish before the deadline
            return (
                idempotent
                and attempt < self.retry.retries
                and (time.monotonic() + delay + 1.0 < ends)
            )

        while True:
            token = self.credentials.token()
            auth = {
                "in": "header",
                "type": "bearer",
                "key": "Authorization",
                "value": f"Bearer {token}",
            }
            self.calls += 1
            timeout = max(min(self.timeout, ends - time.monotonic()), 1.0)
            try:
                return operation(_request_auth=auth, _request_timeout=timeout)
            except ApiException as exc:
                status = int(exc.status or 0)
                if status == 401 and not token_refreshed:
                    # One retry with a fresh token: it may have been revoked or rotated.
                    token_refreshed = True
                    logger.debug("%s: 401, retrying once with a fresh token", what)
                    self.credentials.invalidate()
                    continue
                if self.retry.transient(status) and may_retry():
                    self._pause(what, attempt, f"HTTP {status}", exc.headers)
                    attempt += 1
                    continue
                raise self._map(exc, status, what, resource) from exc
            except (Urllib3Error, OSError) as exc:
                tls_problem = certificate_failure(exc)
                if tls_problem is not None:
                    # A certificate that does not verify will not verify on the
                    # next attempt either: say so at once.
                    raise ApiUnavailableError(
                        f"{what}: TLS certificate verification failed for "
                        f"{self.api_url}: {tls_problem}",
                        hint=(
                            "set TERRAPI_CA_BUNDLE to the CA bundle that signed the API's "
                            "certificate (or TERRAPI_INSECURE=1 to turn verification off)"
                        ),
                    ) from exc
                handshake = handshake_failure(exc)
                if handshake is not None:
                    # e.g. https:// on a plain-HTTP port: no retry will change that.
                    raise ApiUnavailableError(
                        f"{what}: the TLS handshake with {self.api_url} failed: {handshake}",
                        hint="check TERRAPI_URL: http:// or https://, and the port",
                    ) from exc
                reason = type(exc).__name__
                if may_retry(self.retry.delay(attempt, None)):
                    self._pause(what, attempt, reason, None)
                    attempt += 1
                    continue
                if _timed_out(exc):
                    raise ApiUnavailableError(
                        f"{what}: the API at {self.api_url} did not answer "
                        f"({attempt + 1} attempt(s) in {self.deadline:.0f} s)",
                        hint="the API may be overloaded or stopped: try again later",
                    ) from exc
                raise ApiUnavailableError(
                    f"{what}: the API at {self.api_url} could not be reached "
                    f"after {attempt + 1} attempt(s) ({reason})",
                ) from exc
            except ValueError as exc:  # a response the generated models cannot parse
                raise ApiError(
                    f"{what}: the API at {self.api_url} sent a response sts-bridge "
                    f"cannot read ({type(exc).__name__})",
                    hint="check that TERRAPI_URL points at a TerrAPI server",
                ) from exc

    def _pause(self, what: str, attempt: int, reason: str, headers: Any) -> None:
        delay = self.retry.delay(attempt, _retry_after(headers, self._clock()))
        logger.info("%s: %s, retrying in %.1f s (attempt %d)", what, reason, delay, attempt + 2)
        self._sleep(delay)

    def _map(self, exc: Any, status: int, what: str, resource: str | None) -> ApiError:
        detail = _problem_detail(exc)
        suffix = f": {detail}" if detail else ""
        if status == 0:
            reason = redact(str(getattr(exc, "reason", "") or "")).splitlines()
            first = reason[0] if reason else "connection failed"
            hint = None
            if "SSL" in first:
                hint = "set TERRAPI_CA_BUNDLE to the CA that signed the API's certificate"
            return ApiUnavailableError(
                f"{what}: {first} ({self.api_url})", status=None, detail=detail, hint=hint
            )
        if status == 401:
            return NotAuthenticatedError(
                f"{what}: the API refused the access token (401){suffix}",
                status=status,
                detail=detail,
            )
        if status == 403:
            target = resource or "this resource"
            return PermissionDeniedError(
                f"{what}: you may not use {target} (403){suffix}", status=status, detail=detail
            )
        if status == 404 and resource is None:
            # Every TerrAPI server has this path: the URL is not a TerrAPI base.
            return ApiError(
                f"{what}: {self.api_url} has no such endpoint (404){suffix}",
                status=status,
                detail=detail,
                hint="check TERRAPI_URL: the TerrAPI base URL, e.g. https://terrapi.example.org/core",
            )
        if status == 404:
            target = resource or "the resource"
            return NotFoundError(
                f"{what}: {target} does not exist (404){suffix}", status=status, detail=detail
            )
        if self.retry.transient(status) or status >= 500:
            return ApiUnavailableError(
                f"{what}: the API answered {status} after {self.retry.attempts} attempt(s){suffix}",
                status=status,
                detail=detail,
            )
        return ApiError(
            f"{what}: the API answered {status}{suffix}",
            status=status,
            detail=detail,
            hint="run again with --debug, and report it if it persists",
        )
