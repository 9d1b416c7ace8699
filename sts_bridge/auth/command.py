"""A token printed by a command (``TERRAPI_TOKEN_COMMAND``, e.g. ``oidc-token NAME``).

The command is split with :func:`shlex.split` and run without a shell. It
prints either the bare access token, or a JSON object with ``access_token``
and ``expires_in`` / ``expires_at`` (like AWS ``credential_process``). It is
run again when the printed token expires (JWT ``exp``, or the JSON expiry);
a token without any expiry is asked for again after ``max_age`` seconds.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Sequence
from datetime import timedelta

from sts_bridge._redact import redact
from sts_bridge.auth.base import DEFAULT_LEEWAY, Token, TokenCredentials
from sts_bridge.clock import Clock
from sts_bridge.errors import AuthError, ConfigurationError

__all__ = ["CommandToken"]

# RFC 6750 b64token: what a bearer token may hold (a JWT, an opaque token)
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class CommandToken(TokenCredentials):
    """Access tokens printed on stdout by a command.

    :param command: a command line (shlex-split, no shell) or an argv list.
    :param max_age: lifetime assumed for tokens that carry no expiry.
    :param timeout: seconds the command may run.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        max_age: float = 60.0,
        timeout: float = 60.0,
        leeway: float = DEFAULT_LEEWAY,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(leeway=leeway, clock=clock)
        try:
            argv = shlex.split(command) if isinstance(command, str) else list(command)
        except ValueError as exc:  # "No closing quotation", "No escaped character"
            raise ConfigurationError(
                f"TERRAPI_TOKEN_COMMAND cannot be split into a command line: {exc}",
                hint="check its quotes and backslashes (it is split like a shell line, "
                "without a shell)",
            ) from None
        if not argv:
            raise ConfigurationError(
                "TERRAPI_TOKEN_COMMAND is empty", hint="set it to e.g. `oidc-token myaccount`"
            )
        self.argv = argv
        self.max_age = max_age
        self.timeout = timeout

    def __repr__(self) -> str:
        return (
            f"CommandToken(command={self.argv[0]!r}, state={self.state!r}, expiry={self.expiry!r})"
        )

    def _fetch(self, current: Token | None) -> Token:
        name = self.argv[0]
        try:
            done = subprocess.run(
                self.argv,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise ConfigurationError(
                f"the token command {name!r} was not found",
                hint="check TERRAPI_TOKEN_COMMAND and your PATH",
            ) from None
        except UnicodeDecodeError:
            raise AuthError(
                f"the token command {name!r} printed bytes that are not UTF-8 text",
                hint="it must print the access token (or a JSON document) as text",
            ) from None
        except subprocess.TimeoutExpired:
            raise AuthError(
                f"the token command {name!r} ran longer than {self.timeout:.0f} s"
            ) from None
        except OSError as exc:
            raise AuthError(f"cannot run the token command {name!r}: {exc.strerror}") from None
        if done.returncode != 0:
            lines = redact(done.stderr or "").strip().splitlines()
            detail = f": {lines[-1][:200]}" if lines else ""
            raise AuthError(
                f"the token command {name!r} failed with exit status {done.returncode}{detail}",
                hint="run it yourself to see why (is its agent running / logged in?)",
            )
        out = done.stdout.strip()
        if not out:
            raise AuthError(f"the token command {name!r} printed nothing")
        now = self.now()
        if out.startswith("{"):
            try:
                document = json.loads(out)
                token = Token.from_response(document, now=now)
            except ValueError:
                raise AuthError(
                    f"the token command {name!r} printed JSON without an access_token"
                ) from None
        else:
            token = Token.from_response({"access_token": out.split()[0]}, now=now)
        if not _TOKEN_SHAPE.fullmatch(token.access_token):
            raise AuthError(
                f"the token command {name!r} printed something that is not an access token",
                hint="it must print the token alone (letters, digits and -._~+/=), "
                "or a JSON document with access_token",
            )
        if token.expiry is None:
            token = Token(
                access_token=token.access_token,
                expiry=now + timedelta(seconds=self.max_age),
                obtained_at=now,
            )
        return token
