"""Plug in any other scheme: a user-supplied :class:`Authenticator`."""

from __future__ import annotations

import importlib
from datetime import datetime, timezone
from typing import Protocol, runtime_checkable

from sts_bridge._redact import redact
from sts_bridge.auth.base import DEFAULT_LEEWAY, Token, TokenCredentials
from sts_bridge.clock import Clock
from sts_bridge.errors import AuthError, ConfigurationError, StsBridgeError

__all__ = ["Authenticator", "AuthenticatorCredentials", "load_authenticator"]


@runtime_checkable
class Authenticator(Protocol):
    """Anything that can produce an access token and say when it expires.

    Implement ``__call__`` (a plain function works too)::

        def my_authenticator() -> tuple[str, datetime | None]:
            token = my_vault.read("terrapi-token")
            return token.value, token.expires_at  # tz-aware, or None if unknown

        creds = AuthenticatorCredentials(my_authenticator)

    It is called again whenever the previous token is about to expire (or
    after :meth:`TokenCredentials.refresh`), under a lock, so it need not be
    thread-safe. Raise :class:`~sts_bridge.errors.AuthError` (or a subclass)
    to report a failure. From configuration, ``TERRAPI_FLOW=package.module:name``
    names an authenticator (or a zero-argument factory returning one).
    """

    def __call__(self) -> tuple[str, datetime | None]: ...


class AuthenticatorCredentials(TokenCredentials):
    """:class:`TokenCredentials` over a user-supplied :class:`Authenticator`."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(leeway=leeway, clock=clock)
        self.authenticator = authenticator

    def _fetch(self, current: Token | None) -> Token:
        try:
            result = self.authenticator()
        except StsBridgeError:
            raise
        except Exception as exc:  # the user's code: its failure is a failed login
            raise AuthError(
                f"the authenticator {self.authenticator!r} failed: "
                f"{type(exc).__name__}: {redact(str(exc))[:200]}",
                hint="run it yourself to see why; it must take no argument and "
                "return (token, expiry)",
            ) from exc
        try:
            access_token, expiry = result
        except (TypeError, ValueError):
            raise AuthError(
                f"the authenticator {self.authenticator!r} must return (token, expiry)"
            ) from None
        if not isinstance(access_token, str) or not access_token:
            raise AuthError(f"the authenticator {self.authenticator!r} returned no token")
        if expiry is not None and expiry.tzinfo is None:
            expiry = expiry.replace(tzinfo=timezone.utc)
        return Token(access_token=access_token, expiry=expiry, obtained_at=self.now())


def load_authenticator(spec: str) -> Authenticator:
    """Import ``package.module:name``; call it first when it is a factory (a class)."""
    module_name, _, attribute = spec.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot load the authenticator {spec!r} ({type(exc).__name__})",
            hint="TERRAPI_FLOW=package.module:name must name an importable callable",
        ) from None
    hint = "TERRAPI_FLOW=package.module:name must name a callable that takes no argument"
    if isinstance(target, type):
        _check_no_arguments(target, spec, hint)
        try:
            target = target()
        except Exception as exc:
            raise ConfigurationError(
                f"the authenticator factory {spec!r} failed: {type(exc).__name__}", hint=hint
            ) from exc
    if not callable(target):
        raise ConfigurationError(f"the authenticator {spec!r} is not callable", hint=hint)
    _check_no_arguments(target, spec, hint)
    return target  # type: ignore[no-any-return]


def _check_no_arguments(target: object, spec: str, hint: str) -> None:
    """A callable that needs arguments (``json:loads``) cannot be an authenticator:
    say so now, not as a ``TypeError`` at the first login."""
    import inspect

    try:
        inspect.signature(target).bind()  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigurationError(
            f"the authenticator {spec!r} cannot be called without arguments ({exc})", hint=hint
        ) from None
    except ValueError:  # no signature to read (some builtins): it is tried at the first use
        return
