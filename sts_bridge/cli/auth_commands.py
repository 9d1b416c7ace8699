"""``sts-bridge login | logout | whoami | token``.

stdout carries results (``token`` prints only the access token); stderr
carries talk. Tokens are never printed anywhere else.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sts_bridge.clock import utc_now

if TYPE_CHECKING:
    from sts_bridge.cli._context import CommandContext

__all__ = ["register"]


def register(subparsers: Any) -> None:
    login = subparsers.add_parser(
        "login",
        help="log in (browser, device code or client credentials) and cache the login",
        description=(
            "Log in and keep the login in the token cache (STS_BRIDGE_CACHE_DIR). "
            "A person logs in in the browser, or with a device code when no browser "
            "can be opened; a service logs in with TERRAPI_CLIENT_ID and "
            "TERRAPI_CLIENT_SECRET (never pass a secret on the command line)."
        ),
    )
    login.add_argument(
        "--flow",
        choices=("browser", "device", "client-credentials"),
        help="login flow (default: TERRAPI_FLOW, else client-credentials when a "
        "client secret is configured, else browser)",
    )
    login.add_argument(
        "--no-browser",
        action="store_true",
        help="do not open a browser: use the device code flow",
    )
    login.set_defaults(handler=_login)

    logout = subparsers.add_parser(
        "logout", help="revoke the cached login and delete it from the token cache"
    )
    logout.set_defaults(handler=_logout)

    whoami = subparsers.add_parser(
        "whoami", help="show who the current token belongs to (never the token itself)"
    )
    whoami.add_argument("--json", action="store_true", help="print JSON on stdout")
    whoami.set_defaults(handler=_whoami)

    token = subparsers.add_parser(
        "token",
        help="print a valid access token on stdout (refreshed when needed)",
        description='Print a valid access token, e.g. curl -H "Authorization: Bearer '
        '$(sts-bridge token)" ...',
    )
    token.set_defaults(handler=_token)


def _note(ctx: CommandContext, text: str) -> None:
    if not ctx.quiet:
        ctx.err.write(text + "\n")


def _when(expiry: datetime | None) -> str:
    if expiry is None:
        return "no known expiry"
    seconds = (expiry - utc_now()).total_seconds()
    return f"until {expiry.astimezone():%Y-%m-%d %H:%M:%S %Z} (in {max(seconds, 0):.0f} s)"


def _describe(claims: dict[str, Any], subject: str | None) -> str:
    name = claims.get("preferred_username") or claims.get("email") or subject or "unknown"
    return f"{name} ({subject})" if subject and subject != name else str(name)


def _login(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.auth import ClientCredentials, UserCredentials, credentials_from_settings
    from sts_bridge.config import load_settings

    settings = load_settings()
    flow = args.flow
    if flow is None and settings.flow in ("browser", "device", "client-credentials"):
        flow = settings.flow
    if flow is None:
        flow = "client-credentials" if settings.client_secret else "browser"
    if args.no_browser and flow == "browser":
        flow = "device"
    if settings.token:
        _note(ctx, "note: TERRAPI_TOKEN is set and takes precedence over this login")
    creds = credentials_from_settings(settings.replace(flow=flow), interactive=True)
    if isinstance(creds, UserCredentials):
        creds.login()
    elif isinstance(creds, ClientCredentials):
        # a new token from the provider: a cached one may be one the API refuses
        creds.refresh(adopt=False)
    else:  # pragma: no cover - the three flows above are the only choices
        creds.token()
    where = f"; cached in {creds.cache.path}" if creds.cache is not None else ""
    _note(
        ctx, f"Logged in as {_describe(creds.claims, creds.subject)} {_when(creds.expiry)}{where}"
    )
    return 0


def _logout(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.auth import logout
    from sts_bridge.config import load_settings

    existed, revoked = logout(load_settings())
    if not existed:
        _note(ctx, "Not logged in (no cached login).")
    elif revoked:
        _note(ctx, "Logged out: the refresh token was revoked and the cached login deleted.")
    else:
        _note(ctx, "Logged out: the cached login was deleted.")
    return 0


def _token(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.auth import credentials_from_settings
    from sts_bridge.config import load_settings

    creds = credentials_from_settings(load_settings(), interactive=False)
    token = creds.token()
    ctx.out.write(token + "\n")
    ctx.out.flush()
    return 0


_SHOWN_CLAIMS = (
    "iss",
    "sub",
    "preferred_username",
    "name",
    "email",
    "groups",
    "azp",
    "client_id",
    "aud",
    "scope",
    "iat",
    "exp",
)


def _whoami(args: argparse.Namespace, ctx: CommandContext) -> int:
    from sts_bridge.auth import credentials_from_settings
    from sts_bridge.config import load_settings

    settings = load_settings()
    creds = credentials_from_settings(settings, interactive=False)
    creds.token()
    claims = creds.claims or creds.id_token_claims
    info: dict[str, Any] = {
        "flow": type(creds).__name__,
        "subject": creds.subject,
        "expires": creds.expiry.isoformat() if creds.expiry else None,
        "claims": {k: claims[k] for k in _SHOWN_CLAIMS if k in claims},
    }
    api_info = _api_user_info(settings, creds)
    if api_info is not None:
        info["api"] = api_info
    if args.json:
        ctx.print(json.dumps(info, indent=2, default=str))
        return 0
    ctx.print(f"subject:  {_describe(claims, creds.subject)}")
    ctx.print(f"flow:     {info['flow']}")
    ctx.print(f"token:    valid {_when(creds.expiry)}")
    for key, value in info["claims"].items():
        if key in ("iat", "exp") and isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value, timezone.utc).isoformat()
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        ctx.print(f"{key + ':':<20}{value}")
    if api_info is not None:
        ctx.print("TerrAPI user info:")
        ctx.print(json.dumps(api_info, indent=2, default=str))
    return 0


def _api_user_info(settings: Any, creds: Any) -> Any:
    """The API's view of the principal, when the API client and TERRAPI_URL exist."""
    if not settings.api_url or importlib.util.find_spec("sts_bridge.terrapi.api") is None:
        return None
    from sts_bridge.terrapi import api

    client_cls = getattr(api, "TerrapiApi", None)
    if client_cls is None:
        return None
    result = client_cls(settings.api_url, creds, verify=settings.verify).user_info()
    to_dict = getattr(result, "to_dict", None)
    return to_dict() if callable(to_dict) else result
