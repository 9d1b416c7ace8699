"""Every error sts-bridge raises, by cause.

The tree (catch the level you care about)::

    StsBridgeError                  base of everything below
    ├── ConfigurationError          missing or contradictory settings
    ├── AuthError                   getting or refreshing an access token failed
    │   ├── InvalidClientError      client id / secret refused by the provider
    │   ├── InvalidGrantError       refresh token expired or revoked: log in again
    │   ├── AccessDeniedError       the person refused at the device/browser prompt
    │   ├── LoginTimeoutError       a device code or browser login was not completed in time
    │   ├── ProviderUnreachableError the identity provider did not answer
    │   ├── ClockSkewError          the local clock disagrees with the provider's
    │   ├── TokenCacheError         a token cache file is unreadable or foreign
    │   ├── CallerRefusedError      a service refused its caller's token (401 / 403)
    │   └── TokenExchangeError      an RFC 8693 token exchange was refused or failed
    ├── ApiError                    the TerrAPI server refused or failed a call
    │   ├── NotAuthenticatedError   401: the token was refused
    │   ├── PermissionDeniedError   403: the principal may not use this
    │   ├── NotFoundError           404: no such workspace / resource
    │   │   └── WorkspaceNotFoundError  with the available names
    │   └── ApiUnavailableError     5xx / 429 / connection errors after retries
    ├── WorkspaceError              a workspace that sts-bridge cannot use (not S3, ...)
    ├── CredentialsError            STS credentials could not be obtained, refreshed, or expired
    │   └── SharedCredentialsExpiredError  a Dask worker's shared credentials ran out
    ├── StorageError                the object store (S3) refused or failed a request
    │   ├── ObjectNotFoundError     404 NoSuchKey / NoSuchUpload: no such object or upload
    │   ├── StorageAccessDeniedError 403 from the store: the credentials do not allow this
    │   ├── PreconditionFailedError 412: the object changed since it was read
    │   └── StorageUnavailableError 5xx / SlowDown / stalls, after retries
    ├── InvalidKeyError             an object key that would leave the workspace prefix
    ├── InvalidArgumentError        an argument that cannot be sent (e.g. a header with CR/LF)
    └── TransferError               an upload/download failed locally (the file, the
                                    destination, a changed source); parts were cleaned up

``ApiError`` is only the TerrAPI server: a missing object or a 403 from the
store is a ``StorageError``, so ``except ApiError`` never catches one.

Messages say what happened and what to do next; they never contain tokens,
secrets or credentials.
"""

from __future__ import annotations

from collections.abc import Sequence


class StsBridgeError(Exception):
    """Base class of every error raised by sts-bridge.

    ``hint`` is a short "what to do next" sentence that the CLI prints on its
    own line; it is also part of ``str(exc)``.
    """

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        if hint is not None:
            self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class ConfigurationError(StsBridgeError):
    """A required setting is missing or two settings contradict each other."""


# --- authentication -------------------------------------------------------


class AuthError(StsBridgeError):
    """Getting or refreshing an access token failed."""


class InvalidClientError(AuthError):
    """The identity provider refused the client id or secret."""

    hint = "check TERRAPI_CLIENT_ID and TERRAPI_CLIENT_SECRET"


class InvalidGrantError(AuthError):
    """The refresh token (or device/authorization code) is expired or revoked."""

    hint = "run `sts-bridge login` again"


class AccessDeniedError(AuthError):
    """The person refused the login at the provider's prompt."""

    hint = "run `sts-bridge login` again and approve the request"


class LoginTimeoutError(AuthError):
    """The device code or browser login expired before it was completed."""

    hint = "run `sts-bridge login` again and complete it before the deadline"


class ProviderUnreachableError(AuthError):
    """The identity provider could not be reached."""

    hint = "check TERRAPI_ISSUER and your network, then try again"


class ClockSkewError(AuthError):
    """The local clock is too far from the provider's for tokens to be valid."""

    hint = "synchronise this machine's clock (e.g. with NTP)"


class TokenCacheError(AuthError):
    """A token cache file cannot be read or belongs to something else."""


# --- API ------------------------------------------------------------------


class ApiError(StsBridgeError):
    """The TerrAPI server refused or failed a call.

    ``status`` is the HTTP status (``None`` for connection errors) and
    ``detail`` the ProblemDetails ``detail`` member when the server sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.detail = detail
        super().__init__(message, hint=hint)


class NotAuthenticatedError(ApiError):
    """401: the API refused the access token."""

    hint = "run `sts-bridge login` again, or check TERRAPI_ISSUER matches the API"


class PermissionDeniedError(ApiError):
    """403: the principal may not use this resource."""

    hint = "ask the workspace owner for access, or pick one from `sts-bridge workspaces`"


class NotFoundError(ApiError):
    """404: the resource does not exist."""


class WorkspaceNotFoundError(NotFoundError):
    """No workspace of that name is visible to this principal."""

    def __init__(
        self,
        name: str,
        available: Sequence[str],
        *,
        suggestion: str | None = None,
        status: int | None = 404,
        detail: str | None = None,
    ) -> None:
        self.name = name
        self.available = list(available)
        self.suggestion = suggestion
        listing = ", ".join(self.available) if self.available else "none"
        message = f"no workspace named {name!r}"
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        super().__init__(
            message,
            status=status,
            detail=detail,
            hint=f"available workspaces: {listing}",
        )


class ApiUnavailableError(ApiError):
    """The API answered 429/5xx or could not be reached, after retries."""

    hint = "check TERRAPI_URL and try again later"


# --- storage ---------------------------------------------------------------


class WorkspaceError(StsBridgeError):
    """The workspace exists but sts-bridge cannot use it (e.g. not S3)."""


class CredentialsError(StsBridgeError):
    """STS credentials could not be obtained or refreshed."""


class SharedCredentialsExpiredError(CredentialsError):
    """The credentials a Dask client shared with this worker expired (``sts_bridge.dask``)."""


class InvalidKeyError(StsBridgeError, ValueError):
    """An object key is unsafe: it could leave the workspace prefix."""

    hint = "use a relative key such as 'results/run-1/output.tif'"


class TransferError(StsBridgeError):
    """An upload or download failed; any partial multipart upload was aborted.

    Raised for what the transfer itself finds (a source file that changed or
    vanished, a destination that cannot be written, a checksum that does not
    match); what the store answers is a :class:`StorageError`.
    """


# --- object store -------------------------------------------------------------


class StorageError(StsBridgeError):
    """The object store refused or failed a request.

    ``status`` is the HTTP status (``None`` when the store did not answer),
    ``code`` the S3 error code (``""`` when the answer had none) and ``key``
    the object key as the user names it (without the workspace prefix), when
    the request was about one object.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.key = key
        super().__init__(message, hint=hint)


class ObjectNotFoundError(StorageError):
    """404 from the store: no such object (NoSuchKey) or multipart upload (NoSuchUpload)."""

    hint = "list the workspace with `sts-bridge ls`"


class StorageAccessDeniedError(StorageError):
    """403 from the store: the workspace credentials do not allow this request."""

    hint = "your workspace credentials do not allow this; check the key is inside the workspace"


class PreconditionFailedError(StorageError):
    """412 from the store: the object changed since it was read (If-Match failed)."""

    hint = "the object changed meanwhile; try again"


class StorageUnavailableError(StorageError):
    """The store answered 5xx / SlowDown, or stalled or did not answer, after retries."""

    hint = "the storage endpoint is unreachable or too slow; check the network and try again"


__all__ = [
    "AccessDeniedError",
    "ApiError",
    "ApiUnavailableError",
    "AuthError",
    "ClockSkewError",
    "ConfigurationError",
    "CredentialsError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidKeyError",
    "LoginTimeoutError",
    "NotAuthenticatedError",
    "NotFoundError",
    "ObjectNotFoundError",
    "PermissionDeniedError",
    "PreconditionFailedError",
    "ProviderUnreachableError",
    "SharedCredentialsExpiredError",
    "StorageAccessDeniedError",
    "StorageError",
    "StorageUnavailableError",
    "StsBridgeError",
    "TokenCacheError",
    "TransferError",
    "WorkspaceError",
    "WorkspaceNotFoundError",
]


# --- added for the auth layer (issue 4) ----------------------------------


class LoginRequiredError(AuthError):
    """No usable login: nothing cached and no non-interactive way to get a token."""

    hint = "run `sts-bridge login` (or set TERRAPI_TOKEN / TERRAPI_CLIENT_SECRET)"


class TokenExpiredError(AuthError):
    """A token given from outside (TERRAPI_TOKEN, a command) has expired."""

    hint = "set a fresh TERRAPI_TOKEN, or use `sts-bridge login` so tokens refresh themselves"


__all__ += ["LoginRequiredError", "TokenExpiredError"]


# --- added for bad input (issue 11) -----------------------------------------


class InvalidArgumentError(StsBridgeError, ValueError):
    """An argument sts-bridge cannot send (a header value with a line break, ...)."""


__all__ += ["InvalidArgumentError"]


# --- added for services checking their callers (issue 22) -------------------


class CallerRefusedError(AuthError):
    """A service refused the bearer token of a caller (RFC 6750).

    ``status`` is 401 (``error="invalid_token"``: no valid token) or 403
    (``error="insufficient_scope"``: a valid token without a required scope,
    group or entitlement). The message is one line saying why; it never holds
    the token. :meth:`www_authenticate` is the header value to answer with.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 401,
        error: str | None = "invalid_token",
        scope: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.scope = scope

    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` value of this refusal (quotes and line breaks removed)."""

        def quoted(value: str) -> str:
            clean = "".join(c for c in value if c.isprintable() and c not in '"\\')
            return f'"{clean}"'

        if self.error is None:  # no token at all: RFC 6750 section 3.1 names no error
            return "Bearer"
        parts = [f"error={quoted(self.error)}", f"error_description={quoted(self.message)}"]
        if self.scope:
            parts.append(f"scope={quoted(self.scope)}")
        return "Bearer " + ", ".join(parts)


class TokenExchangeError(AuthError):
    """The identity provider refused or failed an RFC 8693 token exchange."""


__all__ += ["CallerRefusedError", "TokenExchangeError"]
