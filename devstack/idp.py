"""The identity provider of the local platform: panva's oidc-provider (Node).

``IdentityProvider(IdpConfig())`` writes a JSON config (fresh signing key,
fresh client secrets, cookie keys) into a temp folder, starts
``node devstack/node/provider.mjs <config>`` on a free loopback port and waits
for discovery. It looks like the Keycloak realm of the real platform:

* RS256 JWT access tokens (``typ: at+jwt``) whose ``aud`` is
  :data:`DEFAULT_AUDIENCE`, also when the client sends no ``resource``;
  claims ``sub``, ``preferred_username``, ``email``, ``groups``, ``azp``,
  ``client_id``, ``scope``.
* The service client (client credentials) is a service account: ``sub`` is
  the client id, ``preferred_username`` is ``service-account-<client id>``;
  asking for ``offline_access`` yields a real, rotating refresh token.
* Unknown scopes are ignored, not refused; refreshing with a ``scope``
  parameter narrows it to what the refresh token holds.
* Real interaction pages (login, consent, device code entry and
  confirmation); :func:`IdentityProvider.complete_browser_login` and
  :func:`IdentityProvider.approve_device` drive them with ``requests``.
* ``auto_approve=True``: an authorization request carrying
  ``login_hint=<username>`` of a configured user is logged in without the
  password form, and consent is granted without the consent form; requests
  without a known ``login_hint`` still show the login page.
  Consent is always automatic for the first-party CLI client.
* Token exchange (RFC 8693) for ``exchange`` clients (default
  :data:`EXCHANGE_CLIENT_ID`): a user's JWT access token addressed to the
  client's audience (:data:`EXCHANGE_AUDIENCE`, a resource a user logs in
  for) becomes an API token of the same ``sub`` with ``act: {sub: client}``
  and the asked scopes, narrowed to those the presented token holds.
* Opaque access tokens for ``opaque_tokens`` clients (default
  :data:`OPAQUE_CLI_CLIENT_ID`, a CLI-like public client): their users'
  tokens are random strings, not JWTs; only ``exchange`` clients may
  introspect them (RFC 7662, ``introspection_endpoint``; the answer holds
  ``sub``, ``aud``, ``scope``, ``exp``, ``groups``...), and they may be
  exchanged like JWT access tokens.
* ``GET /__devstack/stats`` counts every other request by ``"METHOD /path"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from . import lifeline
from .keys import generate_signing_jwk, public_jwk
from .ports import free_port, wait_until_ready

#: The ``aud`` of every access token the local IdP issues (the TerrAPI API).
DEFAULT_AUDIENCE = "urn:sts-bridge:terrapi"
DEFAULT_PLATFORM = "gep"
SERVICE_CLIENT_ID = "sts-bridge-service"
CLI_CLIENT_ID = "sts-bridge-cli"
#: A CLI-like client whose users' access tokens are opaque (introspection tests).
OPAQUE_CLI_CLIENT_ID = "sts-bridge-cli-opaque"
#: The group of the third default user (a route that requires a group).
CURATORS_GROUP = "curators"
#: A service users call with tokens for :data:`EXCHANGE_AUDIENCE`; it may exchange them.
EXCHANGE_CLIENT_ID = "sts-bridge-results"
EXCHANGE_AUDIENCE = "urn:sts-bridge:results"
#: RFC 8693's grant type.
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
API_CLIENT_ID = "terrapi-api"
#: Registered redirect URI of the CLI client; any port matches (RFC 8252).
CLI_REDIRECT_URI = "http://127.0.0.1/callback"

NODE_DIR = Path(__file__).resolve().parent / "node"
PROVIDER_SCRIPT = NODE_DIR / "provider.mjs"


class IdpError(RuntimeError):
    """The identity provider could not start, or a page did not behave."""


def _sub_for(username: str) -> str:
    # Keycloak-style UUID subjects, stable across starts.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"sts-bridge-devstack:user:{username}"))


@dataclass
class User:
    username: str
    password: str
    email: str = ""
    groups: list[str] = field(default_factory=list)
    name: str = ""
    sub: str = ""

    def __post_init__(self) -> None:
        if not self.sub:
            self.sub = _sub_for(self.username)
        if not self.email:
            self.email = f"{self.username}@example.test"
        if not self.name:
            self.name = self.username.capitalize()


@dataclass
class ClientSpec:
    """A registered client. ``kind`` is ``service`` (client credentials,
    service account, refresh tokens with offline_access), ``cli`` (public
    native client: auth code + PKCE S256 on any loopback port, device code,
    refresh) or ``api`` (confidential, client credentials only).
    ``secret=None`` for a confidential client means: generated at each start.
    ``first_party`` (default: true for ``cli``) skips the consent page.
    ``exchange`` is a confidential service that users call with tokens for
    its own ``audience`` (a resource they log in for) and that may exchange
    them (RFC 8693) for an API token of the same user; it may also introspect
    tokens (RFC 7662). ``opaque_tokens``: the access tokens this client
    obtains are opaque (not JWTs)."""

    client_id: str
    kind: str
    secret: str | None = None
    name: str = ""
    first_party: bool | None = None
    audience: str = ""
    opaque_tokens: bool = False


def default_users() -> list[User]:
    return [
        User("alice", "alice-password", groups=["team-a"], name="Alice Liddell"),
        User("bob", "bob-password", groups=["team-b"], name="Bob Builder"),
        User("carol", "carol-password", groups=["team-b", CURATORS_GROUP], name="Carol Curator"),
    ]


def default_clients() -> list[ClientSpec]:
    return [
        ClientSpec(SERVICE_CLIENT_ID, "service", name="sts-bridge service client"),
        ClientSpec(CLI_CLIENT_ID, "cli", name="sts-bridge CLI"),
        ClientSpec(
            OPAQUE_CLI_CLIENT_ID, "cli", name="a CLI with opaque tokens", opaque_tokens=True
        ),
        ClientSpec(API_CLIENT_ID, "api", name="TerrAPI reference server"),
        ClientSpec(
            EXCHANGE_CLIENT_ID,
            "exchange",
            name="sts-bridge results service",
            audience=EXCHANGE_AUDIENCE,
        ),
    ]


@dataclass
class IdpConfig:
    access_token_ttl: int = 3600
    #: lifetime of tokens issued by token exchange (None: ``access_token_ttl``)
    exchange_token_ttl: int | None = None
    refresh_token_ttl: int = 14 * 24 * 3600
    device_code_ttl: int = 600
    audience: str = DEFAULT_AUDIENCE
    platform: str = DEFAULT_PLATFORM
    auto_approve: bool = False
    users: list[User] = field(default_factory=default_users)
    clients: list[ClientSpec] = field(default_factory=default_clients)
    port: int | None = None  # None: a free port
    startup_timeout: float = 15.0
    node: str | None = None  # path of the node binary; default: `node` on PATH


def _client_metadata(spec: ClientSpec, secret: str | None) -> dict[str, Any]:
    base: dict[str, Any] = {"client_id": spec.client_id}
    if spec.name:
        base["client_name"] = spec.name
    if spec.kind == "cli":
        base.update(
            application_type="native",
            token_endpoint_auth_method="none",
            redirect_uris=[CLI_REDIRECT_URI],
            response_types=["code"],
            grant_types=[
                "authorization_code",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:device_code",
            ],
        )
    elif spec.kind == "service":
        base.update(
            client_secret=secret,
            token_endpoint_auth_method="client_secret_basic",
            redirect_uris=[],
            response_types=[],
            grant_types=["client_credentials", "refresh_token"],
        )
    elif spec.kind == "exchange":
        base.update(
            client_secret=secret,
            token_endpoint_auth_method="client_secret_basic",
            redirect_uris=[],
            response_types=[],
            grant_types=[TOKEN_EXCHANGE_GRANT],
        )
    elif spec.kind == "api":
        base.update(
            client_secret=secret,
            token_endpoint_auth_method="client_secret_basic",
            redirect_uris=[],
            response_types=[],
            grant_types=["client_credentials"],
        )
    else:
        raise ValueError(f"unknown client kind {spec.kind!r}")
    return base


# ------------------------------------------------------------ HTML forms
class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self._current = {
                "id": a.get("id", ""),
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "inputs": {},
            }
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current["inputs"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def _forms(html: str) -> dict[str, dict[str, Any]]:
    parser = _FormParser()
    parser.feed(html)
    return {form["id"]: form for form in parser.forms}


class IdentityProvider:
    """A running local IdP (see the module docstring).

    Attributes after :meth:`start`: ``issuer`` (``http://127.0.0.1:PORT``),
    ``port``, ``discovery_url``, ``jwks_uri``, ``token_endpoint``,
    ``authorization_endpoint``, ``device_authorization_endpoint``,
    ``revocation_endpoint``, ``introspection_endpoint``, ``userinfo_endpoint``,
    ``service_client_id``, ``service_client_secret``, ``cli_client_id``,
    ``api_client_id``, ``api_client_secret``, ``exchange_client_id``,
    ``exchange_client_secret``, ``exchange_audience``, ``client_secrets`` (all),
    ``users`` (username -> :class:`User`), ``jwks`` (the public JWKS, one key
    with ``x5c``), ``audience``, ``platform``, ``pid``.
    """

    def __init__(
        self, config: IdpConfig | None = None, workdir: str | os.PathLike[str] | None = None
    ):
        self.config = config or IdpConfig()
        self._workdir_arg = Path(workdir) if workdir is not None else None
        self.workdir: Path | None = None
        self._own_workdir = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self.port = 0
        self.issuer = ""
        self.users = {u.username: u for u in self.config.users}
        self.audience = self.config.audience
        self.platform = self.config.platform
        self.client_secrets: dict[str, str] = {}
        self.service_client_id = self._first(("service",))
        self.cli_client_id = self._first(("cli",))
        self.api_client_id = self._first(("api",))
        self.exchange_client_id = self._first(("exchange",))
        self.exchange_audience = next(
            (c.audience for c in self.config.clients if c.kind == "exchange"), ""
        )
        self.jwks: dict[str, Any] = {"keys": []}
        self.metadata: dict[str, Any] = {}

    def _first(self, kinds: tuple[str, ...]) -> str | None:
        return next((c.client_id for c in self.config.clients if c.kind in kinds), None)

    # ------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "idp.log" if self.workdir else None

    def start(self) -> IdentityProvider:
        if self.running:
            return self
        if not (NODE_DIR / "node_modules" / "oidc-provider").is_dir():
            raise IdpError(
                f"oidc-provider is not installed in {NODE_DIR}/node_modules: run `make setup` "
                "(it runs `npm ci --prefix devstack/node`)"
            )
        node = self.config.node or shutil.which("node")
        if not node:
            raise IdpError("`node` (Node.js >= 20) is not on PATH: install it, then `make setup`")

        if self._workdir_arg is not None:
            self._workdir_arg.mkdir(parents=True, exist_ok=True)
            self.workdir = lifeline.mkdtemp("idp-", self._workdir_arg)
        else:
            self.workdir = lifeline.mkdtemp("sts-bridge-idp-")
        self._own_workdir = True

        self.port = self.config.port or free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        private = generate_signing_jwk("sts-bridge devstack IdP")
        self.jwks = {"keys": [public_jwk(private)]}
        self.client_secrets = {}
        clients = []
        for spec in self.config.clients:
            secret = None
            if spec.kind in ("service", "api", "exchange"):
                secret = spec.secret or secrets.token_urlsafe(32)
                self.client_secrets[spec.client_id] = secret
            clients.append(
                {
                    "metadata": _client_metadata(spec, secret),
                    "service_account": spec.kind == "service",
                    "opaque_tokens": spec.opaque_tokens,
                    "exchange_audience": spec.audience if spec.kind == "exchange" else "",
                    "first_party": (
                        spec.kind == "cli" if spec.first_party is None else spec.first_party
                    ),
                }
            )
        cfg = {
            "issuer": self.issuer,
            "port": self.port,
            "jwk": private,
            "cookie_keys": [secrets.token_urlsafe(32), secrets.token_urlsafe(32)],
            "audience": self.config.audience,
            "platform_scopes": [self.config.platform],
            "access_token_ttl": int(self.config.access_token_ttl),
            "exchange_token_ttl": int(self.config.exchange_token_ttl or 0) or None,
            "refresh_token_ttl": int(self.config.refresh_token_ttl),
            "device_code_ttl": int(self.config.device_code_ttl),
            "auto_approve": bool(self.config.auto_approve),
            "clients": clients,
            "users": [
                {
                    "username": u.username,
                    "password": u.password,
                    "email": u.email,
                    "groups": list(u.groups),
                    "name": u.name,
                    "sub": u.sub,
                }
                for u in self.config.users
            ],
        }
        config_path = self.workdir / "idp-config.json"
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(cfg, fh)

        self._log = open(self.workdir / "idp.log", "wb")  # noqa: SIM115
        self._proc = lifeline.popen(
            [node, str(PROVIDER_SCRIPT), str(config_path)],
            cwd=str(NODE_DIR),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
        )
        try:
            self._wait_ready()
            self.metadata = requests.get(self.discovery_url, timeout=5).json()
        except BaseException:
            log = self.read_log()
            self.stop()
            raise IdpError(f"the identity provider did not start:\n{log[-4000:]}") from None
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise IdpError(f"node exited with status {self._proc.returncode}")
            try:
                wait_until_ready(self.discovery_url, timeout=0.2, what="identity provider")
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def read_log(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text("utf-8", errors="replace")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.kill()
                proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.workdir is not None and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> IdentityProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave node behind
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()

    # ------------------------------------------------------------ endpoints
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def device_authorization_endpoint(self) -> str:
        return f"{self.issuer}/device/auth"

    @property
    def device_verification_uri(self) -> str:
        return f"{self.issuer}/device"

    @property
    def revocation_endpoint(self) -> str:
        return f"{self.issuer}/token/revocation"

    @property
    def introspection_endpoint(self) -> str:
        return f"{self.issuer}/token/introspection"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/me"

    @property
    def service_client_secret(self) -> str | None:
        return self.client_secrets.get(self.service_client_id or "")

    @property
    def exchange_client_secret(self) -> str | None:
        return self.client_secrets.get(self.exchange_client_id or "")

    @property
    def api_client_secret(self) -> str | None:
        return self.client_secrets.get(self.api_client_id or "")

    def default_scopes(self) -> str:
        """The scope string a client of the real platform asks for."""
        return f"openid email profile offline_access {self.platform}"

    # ------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """``{"total": n, "by_path": {"POST /token": n, ...}}`` since the last
        reset (``/__devstack/*`` requests are not counted)."""
        resp = requests.get(f"{self.issuer}/__devstack/stats", timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def reset_stats(self) -> None:
        requests.post(f"{self.issuer}/__devstack/stats/reset", timeout=5).raise_for_status()

    # ------------------------------------------------------------ logins
    def user_token(
        self,
        username: str = "alice",
        scope: str | None = None,
        resource: str | None = None,
        client_id: str | None = None,
    ) -> str:
        """A fresh access token of ``username`` for the CLI client: authorization
        code + PKCE, the browser played by :meth:`complete_browser_login`.
        ``scope`` defaults to :meth:`default_scopes`; ``resource`` is the
        audience to log in for (default: the API's); ``client_id`` another
        public client (:data:`OPAQUE_CLI_CLIENT_ID`: an opaque token)."""
        client_id = client_id or self.cli_client_id
        import base64
        import hashlib
        from urllib.parse import parse_qs, urlencode

        verifier = secrets.token_urlsafe(48)
        challenge = (
            base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            .rstrip(b"=")
            .decode()
        )
        redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
        state = secrets.token_urlsafe(16)
        query = urlencode(
            {
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": redirect_uri,
                "scope": scope or self.default_scopes(),
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "login_hint": username,
                **({"resource": resource} if resource else {}),
            }
        )
        final = self.complete_browser_login(
            f"{self.authorization_endpoint}?{query}", username, self.users[username].password
        )
        params = parse_qs(urlsplit(final).query)
        if "code" not in params or params.get("state") != [state]:
            raise IdpError(f"the browser login of {username} failed: {params.get('error')}")
        resp = requests.post(
            self.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": params["code"][0],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "client_id": client_id,
            },
            timeout=10,
        )
        resp.raise_for_status()
        return str(resp.json()["access_token"])

    # ------------------------------------------------------------ browser helpers
    def _is_ours(self, url: str) -> bool:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" == self.issuer

    def _follow(self, session: requests.Session, resp: requests.Response) -> requests.Response:
        """Follow redirects while they stay on the IdP; returns the first
        response that is not such a redirect (possibly a redirect elsewhere)."""
        for _ in range(20):
            if not resp.is_redirect:
                return resp
            location = urljoin(resp.url, resp.headers["location"])
            if not self._is_ours(location):
                return resp
            resp = session.get(location, allow_redirects=False, timeout=10)
        raise IdpError("too many redirects at the identity provider")

    def _submit(
        self,
        session: requests.Session,
        page: requests.Response,
        form_id: str,
        fields: dict[str, str] | None = None,
    ) -> requests.Response:
        forms = _forms(page.text)
        form = forms.get(form_id)
        if form is None:
            raise IdpError(
                f"expected form {form_id!r} on {urlsplit(page.url).path} "
                f"(status {page.status_code}), found {sorted(forms)}"
            )
        data = dict(form["inputs"])
        data.update(fields or {})
        action = urljoin(page.url, form["action"] or page.url)
        resp = session.post(action, data=data, allow_redirects=False, timeout=10)
        return self._follow(session, resp)

    def complete_browser_login(
        self,
        authorize_url: str,
        username: str,
        password: str,
        *,
        follow_callback: bool = False,
        session: requests.Session | None = None,
    ) -> str:
        """Play the person's browser: open ``authorize_url``, sign in on the
        login page (skipped when the IdP session or auto_approve makes it
        unnecessary), approve the consent page if there is one, and return the
        final redirect URL (to the client's ``redirect_uri``, carrying
        ``code`` and ``state``, or ``error``). The callback itself is only
        fetched when ``follow_callback`` is true."""
        s = session or requests.Session()
        resp = self._follow(s, s.get(authorize_url, allow_redirects=False, timeout=10))
        for _ in range(5):
            if resp.is_redirect:
                final = urljoin(resp.url, resp.headers["location"])
                if follow_callback:
                    requests.get(final, timeout=10)
                return final
            forms = _forms(resp.text)
            if "login" in forms:
                resp = self._submit(s, resp, "login", {"username": username, "password": password})
                if resp.status_code == 401:
                    raise IdpError(f"login refused for {username!r}")
            elif "consent" in forms:
                resp = self._submit(s, resp, "consent")
            else:
                raise IdpError(
                    f"unexpected page at {urlsplit(resp.url).path} (status {resp.status_code}): "
                    f"{resp.text[:300]}"
                )
        raise IdpError("the authorization did not finish")

    def approve_device(
        self,
        user_code: str,
        username: str,
        password: str,
        *,
        deny: bool = False,
        session: requests.Session | None = None,
    ) -> None:
        """Play the person on the device verification page: enter
        ``user_code``, confirm (or abort when ``deny``; the device then gets
        ``access_denied``), sign in, consent. Raises :class:`IdpError` unless
        the success page (or, with ``deny``, the aborted page) is reached."""
        s = session or requests.Session()
        page = self._follow(
            s, s.get(self.device_verification_uri, allow_redirects=False, timeout=10)
        )
        page = self._submit(s, page, "op.deviceInputForm", {"user_code": user_code})
        if "op.deviceConfirmForm" not in _forms(page.text):
            raise IdpError(f"the user code {user_code!r} was not accepted")
        if deny:
            form = _forms(page.text)["op.deviceConfirmForm"]
            data = {k: v for k, v in form["inputs"].items() if k != "confirm"}
            data["abort"] = "yes"
            resp = s.post(
                urljoin(page.url, form["action"]), data=data, allow_redirects=False, timeout=10
            )
            self._follow(s, resp)
            return
        page = self._submit(s, page, "op.deviceConfirmForm")
        for _ in range(5):
            forms = _forms(page.text)
            if "login" in forms:
                page = self._submit(s, page, "login", {"username": username, "password": password})
                if page.status_code == 401:
                    raise IdpError(f"login refused for {username!r}")
            elif "consent" in forms:
                page = self._submit(s, page, "consent")
            elif "Sign-in success" in page.text:
                return
            else:
                raise IdpError(
                    f"unexpected page at {urlsplit(page.url).path} (status {page.status_code}): "
                    f"{page.text[:300]}"
                )
        raise IdpError("the device approval did not finish")


__all__ = [
    "API_CLIENT_ID",
    "CLI_CLIENT_ID",
    "CLI_REDIRECT_URI",
    "CURATORS_GROUP",
    "DEFAULT_AUDIENCE",
    "DEFAULT_PLATFORM",
    "EXCHANGE_AUDIENCE",
    "EXCHANGE_CLIENT_ID",
    "OPAQUE_CLI_CLIENT_ID",
    "SERVICE_CLIENT_ID",
    "TOKEN_EXCHANGE_GRANT",
    "ClientSpec",
    "IdentityProvider",
    "IdpConfig",
    "IdpError",
    "User",
    "default_clients",
    "default_users",
]
