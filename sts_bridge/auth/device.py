"""The device authorization grant (RFC 8628): log in on another device.

The person opens ``verification_uri`` (or scans the QR code of
``verification_uri_complete``) and types the user code; meanwhile we poll
the token endpoint every ``interval`` seconds, five seconds slower after each
``slow_down``, until approval, refusal or the deadline.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

from sts_bridge.auth.base import Token
from sts_bridge.auth.refresh import UserCredentials
from sts_bridge.clock import Clock
from sts_bridge.errors import AuthError, ConfigurationError, LoginTimeoutError

if TYPE_CHECKING:
    from sts_bridge.auth.oauth import OAuthClient

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DeviceCodeCredentials",
    "Prompt",
    "default_prompt",
    "run_device_flow",
]

logger = logging.getLogger("sts_bridge.auth")

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the person needs to approve a device login (no secret in it)."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    deadline: datetime
    interval: float


#: Shows a :class:`DeviceAuthorization` to the person (tests grab the user code here).
Prompt = Callable[[DeviceAuthorization], None]


def default_prompt(auth: DeviceAuthorization, stream: IO[str] | None = None) -> None:
    """Print the login instructions on stderr, with a QR code on a terminal."""
    out = stream or sys.stderr
    print("To log in, open this page on any device:", file=out)
    print(f"    {auth.verification_uri}", file=out)
    print(f"and enter the code:  {auth.user_code}", file=out)
    if auth.verification_uri_complete:
        print(f"(or open {auth.verification_uri_complete} directly)", file=out)
    local = auth.deadline.astimezone()
    print(f"The code is valid until {local:%H:%M:%S}.", file=out)
    if auth.verification_uri_complete and _isatty(out):
        try:
            import segno
        except ImportError:  # the optional [qr] extra
            return
        qr = segno.make(auth.verification_uri_complete, micro=False)
        qr.terminal(out=out, compact=True)  # type: ignore[arg-type]
    out.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def run_device_flow(
    oauth: OAuthClient,
    scopes: Sequence[str],
    *,
    clock: Clock,
    prompt: Prompt | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Token:
    """Run one device login to the end; the issued :class:`Token`.

    Raises :class:`~sts_bridge.errors.AccessDeniedError` when the person
    refuses, :class:`~sts_bridge.errors.LoginTimeoutError` at the deadline,
    ``KeyboardInterrupt`` untouched (nothing to clean up).
    """
    endpoint = oauth.metadata.device_authorization_endpoint
    if not endpoint:
        raise ConfigurationError(
            f"the identity provider {oauth.metadata.issuer} offers no device login",
            hint="use `sts-bridge login --flow browser` instead",
        )
    form: dict[str, str] = {"scope": " ".join(scopes), **oauth.audience_params()}
    answer = oauth.post_form(endpoint, form, "device authorization")
    try:
        device_code = str(answer["device_code"])
        user_code = str(answer["user_code"])
        verification_uri = str(answer.get("verification_uri") or answer["verification_url"])
        expires_in = float(answer.get("expires_in", 600))
        interval = float(answer.get("interval", 5))
    except (KeyError, TypeError, ValueError) as exc:
        raise AuthError(
            f"the identity provider sent an incomplete device authorization ({exc})"
        ) from None
    complete = answer.get("verification_uri_complete")
    deadline = clock() + timedelta(seconds=expires_in)
    auth = DeviceAuthorization(
        user_code=user_code,
        verification_uri=verification_uri,
        verification_uri_complete=complete if isinstance(complete, str) else None,
        deadline=deadline,
        interval=interval,
    )
    (prompt or default_prompt)(auth)
    params: dict[str, Any] = {"device_code": device_code, **oauth.audience_params()}
    while True:
        remaining = (deadline - clock()).total_seconds()
        if remaining <= 0:
            raise LoginTimeoutError("the device login was not approved before its deadline")
        sleep(min(interval, remaining))
        try:
            return oauth.request_token(DEVICE_CODE_GRANT, now=clock(), **params)
        except AuthError as exc:
            code = getattr(exc, "oauth_error", None)
            if code == "authorization_pending":
                continue
            if code == "slow_down":
                interval += 5  # RFC 8628 section 3.5
                logger.debug("provider asked to slow down; polling every %.0f s", interval)
                continue
            raise


class DeviceCodeCredentials(UserCredentials):
    """A person's login through the device authorization grant, then refreshed.

    :param prompt: shows the code to the person (default: print on stderr,
        with a QR code on a terminal); tests pass a callable that approves it.
    :param interactive: when ``False``, a missing login raises
        :class:`~sts_bridge.errors.LoginRequiredError` instead of prompting.
    """

    def __init__(
        self,
        *args: Any,
        prompt: Prompt | None = None,
        sleep: Callable[[float], None] = time.sleep,
        interactive: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.prompt = prompt
        self._sleep = sleep
        self.interactive = interactive

    def _login(self) -> Token:
        if not self.interactive:
            return super()._login()
        return run_device_flow(
            self.oauth, self.login_scopes, clock=self.now, prompt=self.prompt, sleep=self._sleep
        )

    def login(self) -> Token:
        interactive, self.interactive = self.interactive, True
        try:
            return super().login()
        finally:
            self.interactive = interactive
