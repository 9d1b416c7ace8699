"""What the object store answers -> the :class:`~sts_bridge.errors.StorageError` branch.

One mapper for the S3 boundary, :func:`map_s3_error`, taking plain values
(the S3 error code, the HTTP status, what was being done, the user's key).
The signed HTTP client calls it with what it read from the answer; the
boto3 paths read the same values from a botocore ``ClientError`` with
:func:`botocore_error_values` and call it through :func:`map_botocore_error`.
Messages name the key as the user wrote it (never the workspace prefix)
and never contain credentials.
"""

from __future__ import annotations

from datetime import datetime

from sts_bridge._tls import certificate_failure, handshake_failure
from sts_bridge.clock import utc_now
from sts_bridge.errors import (
    CredentialsError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageAccessDeniedError,
    StorageError,
    StorageUnavailableError,
    StsBridgeError,
)

#: Codes meaning the credentials that signed the request have expired.
EXPIRED_CREDENTIAL_CODES = frozenset({"ExpiredToken", "InvalidToken", "TokenRefreshRequired"})
#: Codes meaning there is no such object, upload or bucket.
NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "NoSuchBucket", "NoSuchUpload"})
#: Codes meaning the store is busy or failing: worth trying again later.
UNAVAILABLE_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "ServiceFailure"}
)
REFUSED_HINT = "the store refused the request as sent; run again with --debug for details"
UNAVAILABLE_HINT = (
    "the storage endpoint is unreachable or too slow; check the network and try again"
)


def map_s3_error(
    code: str,
    status: int | None,
    operation: str,
    *,
    key: str | None = None,
    signed_until: datetime | None = None,
) -> StsBridgeError:
    """The error for one refused or failed S3 request.

    ``code`` is the S3 error code (``""`` when the answer had no body, as a
    HEAD's), ``status`` the HTTP status (``None`` when nothing answered),
    ``operation`` what was being done in the user's words (``"downloading
    'a.txt'"``) and ``key`` the object key as the user names it.
    ``signed_until`` is the expiry of the credentials that signed the
    request, when known: radosgw answers ``AccessDenied`` (not
    ``ExpiredToken``) to expired credentials, and a user must hear that they
    expired, not that they lack a permission.

    Returns a :class:`CredentialsError` for expired credentials, else a
    :class:`StorageError` subclass (:class:`ObjectNotFoundError`,
    :class:`StorageAccessDeniedError`, :class:`PreconditionFailedError`,
    :class:`StorageUnavailableError`) or a plain :class:`StorageError`.
    """
    said = (code or "no error code") + (f", HTTP {status}" if status is not None else "")
    text = f"{operation} failed: the store answered {said}"
    if code in EXPIRED_CREDENTIAL_CODES:
        return CredentialsError(text, hint="the storage credentials expired; try again")
    denied = status == 403 or code == "AccessDenied"
    if denied and signed_until is not None and signed_until <= utc_now():
        return CredentialsError(
            f"{operation} failed: the workspace credentials had expired "
            f"(at {signed_until:%Y-%m-%d %H:%M:%S} UTC; the store said {code or status})",
            hint="use credentials that refresh (the workspace, its filesystem, "
            "or `sts-bridge credentials --serve`), not a snapshot",
        )
    kind: type[StorageError] = StorageError
    if denied:
        kind = StorageAccessDeniedError
    elif status == 404 or code in NOT_FOUND_CODES:
        kind = ObjectNotFoundError
        if key is not None and code != "NoSuchUpload":
            text = f"{operation} failed: no object {key!r}"
    elif status == 412 or code == "PreconditionFailed":
        kind = PreconditionFailedError
    elif status == 429 or (status is not None and status >= 500) or code in UNAVAILABLE_CODES:
        kind = StorageUnavailableError
    if kind is StorageError:  # the subclasses bring their own hint
        return StorageError(text, status=status, code=code, key=key, hint=REFUSED_HINT)
    return kind(text, status=status, code=code, key=key)


def storage_unreachable(
    operation: str, reason: str, *, key: str | None = None, hint: str = UNAVAILABLE_HINT
) -> StorageError:
    """The error for a request the store never answered (after the retries)."""
    return StorageUnavailableError(f"{operation} failed: {reason}", key=key, hint=hint)


def tls_refused(operation: str, endpoint: str, exc: BaseException) -> StorageError | None:
    """The error for a TLS failure no retry will change, or ``None``.

    A certificate that does not verify against the configured trust (the
    system's, or ``TERRAPI_CA_BUNDLE``), or a handshake that cannot succeed
    (``https://`` on a plain-HTTP port).
    """
    problem = certificate_failure(exc)
    if problem is not None:
        return StorageUnavailableError(
            f"{operation} failed: TLS certificate verification failed for the storage "
            f"endpoint {endpoint}: {problem}",
            hint=(
                "set TERRAPI_CA_BUNDLE to the CA bundle that signed the storage endpoint's "
                "certificate (or TERRAPI_INSECURE=1 to turn verification off)"
            ),
        )
    handshake = handshake_failure(exc)
    if handshake is not None:
        return StorageUnavailableError(
            f"{operation} failed: the TLS handshake with the storage endpoint {endpoint} "
            f"failed: {handshake}",
            hint="the platform's storage endpoint may not speak TLS on that port; "
            "report it to the platform's operators",
        )
    return None


def botocore_error_values(exc: BaseException) -> tuple[str, int | None]:
    """``(code, status)`` of a botocore ``ClientError`` (``("", None)`` for anything else)."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", "") or "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


def map_botocore_error(exc: Exception, operation: str, *, key: str | None = None) -> StsBridgeError:
    """A botocore error of a boto3 call -> :func:`map_s3_error` with its plain values.

    Our own errors (e.g. a :class:`CredentialsError` from the credential
    provider the client called) come back unchanged; a botocore connection
    error or read timeout becomes a :class:`StorageUnavailableError`.
    """
    if isinstance(exc, StsBridgeError):
        return exc
    code, status = botocore_error_values(exc)
    if not code and status is None:
        if _botocore_network_error(exc):
            return storage_unreachable(
                operation,
                f"the storage endpoint did not answer ({type(exc).__name__})",
                key=key,
            )
        return StorageError(f"{operation} failed: {type(exc).__name__}", key=key)
    return map_s3_error(code, status, operation, key=key)


def _botocore_network_error(exc: Exception) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore is a dependency
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))
