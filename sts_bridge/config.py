"""The configuration chain: explicit argument > environment > profile > default.

One table (:data:`_FIELDS`) drives the whole chain, in the manner of
botocore's ``configprovider``. Each setting has an environment variable and a
key in the profile file; :func:`load_settings` records where every value came
from so that :meth:`Settings.require` can name every place it looked.

The profile file is an INI file, ``config`` in
``platformdirs.user_config_dir("sts-bridge")`` (or ``STS_BRIDGE_CONFIG_FILE``)::

    [default]
    issuer = https://login.example.org
    url = https://terrapi.example.org/core

    [profile service]
    client_id = my-service
    scopes = gep
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sts_bridge._files import NotRegularFileError, read_regular_file
from sts_bridge._redact import remember_secret
from sts_bridge._user_dirs import cache_dir, user_dir
from sts_bridge.errors import ConfigurationError

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_LEEWAY",
    "FLOWS",
    "Settings",
    "config_file_path",
    "default_cache_dir",
    "load_settings",
    "require",
]

DEFAULT_CLIENT_ID = "sts-bridge-cli"
DEFAULT_LEEWAY = 60.0
#: Refreshing a token more than a day before it expires is a typo, not a setting.
MAX_LEEWAY = 86400.0
#: Values of ``flow`` (TERRAPI_FLOW); ``module:attribute`` names a user authenticator.
FLOWS = (
    "auto",
    "client-credentials",
    "refresh-token",
    "device",
    "browser",
    "static",
    "command",
)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _parse_scopes(value: str) -> tuple[str, ...]:
    # "gep offline_access" and "gep,offline_access" both work; order kept, no duplicates.
    parts = value.replace(",", " ").split()
    return tuple(dict.fromkeys(parts))


def _parse_leeway(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or not 0 <= number <= MAX_LEEWAY:
        raise ValueError(f"{value!r} is not a number of seconds between 0 and {MAX_LEEWAY:.0f}")
    return number


def _parse_url(value: str) -> str | None:
    """An ``http(s)://host[:port][/path]`` URL, or ``None`` when empty."""
    url = value.strip()
    if not url:
        return None
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        # never echoed: the password would land in the error line and the logs
        shown = urllib.parse.urlunsplit(
            parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1])
        )
        raise ValueError(
            f"{shown!r} holds a user name or password; sts-bridge never sends them "
            "(it authenticates with OIDC tokens): remove the 'user:password@' part"
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(
            f"{url!r} has a query ('?...') or fragment ('#...'); give the base URL only, "
            "e.g. https://host/core"
        )
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"{url!r} contains spaces or control characters")
    try:
        host, _ = parts.hostname, parts.port  # .port checks the range
    except ValueError as exc:
        raise ValueError(f"{url!r} has an invalid host or port ({exc})") from None
    if not host:
        raise ValueError(f"{url!r} has no host name")
    return url


def _parse_str(value: str) -> str | None:
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class _Field:
    name: str
    env: str | None
    ini: str | None
    parse: Callable[[str], Any]


# The one table behind the chain (field, environment variable, profile key, parser).
_FIELDS: tuple[_Field, ...] = (
    _Field("api_url", "TERRAPI_URL", "url", _parse_url),
    _Field("issuer", "TERRAPI_ISSUER", "issuer", _parse_url),
    _Field("client_id", "TERRAPI_CLIENT_ID", "client_id", _parse_str),
    _Field("client_secret", "TERRAPI_CLIENT_SECRET", "client_secret", _parse_str),
    _Field("scopes", "TERRAPI_SCOPES", "scopes", _parse_scopes),
    _Field("audience", "TERRAPI_AUDIENCE", "audience", _parse_str),
    _Field("workspace", "TERRAPI_WORKSPACE", "workspace", _parse_str),
    _Field("ca_bundle", "TERRAPI_CA_BUNDLE", "ca_bundle", _parse_str),
    _Field("insecure", "TERRAPI_INSECURE", "insecure", _parse_bool),
    _Field("token", "TERRAPI_TOKEN", None, _parse_str),  # never read from a file
    _Field("token_command", "TERRAPI_TOKEN_COMMAND", "token_command", _parse_str),
    _Field("flow", "TERRAPI_FLOW", "flow", _parse_str),
    _Field("cache_dir", "STS_BRIDGE_CACHE_DIR", "cache_dir", lambda v: Path(v).expanduser()),
    _Field("leeway", "STS_BRIDGE_LEEWAY", "leeway", _parse_leeway),
    _Field("token_cache", "STS_BRIDGE_TOKEN_CACHE", "token_cache", _parse_bool),
)
_BY_NAME = {f.name: f for f in _FIELDS}

#: The CA rule after ``TERRAPI_CA_BUNDLE`` (argument, environment, profile):
#: the variables users already set for their other tools, in this order;
#: then the system's store (:func:`trusted_cas`). One rule for every
#: connection: identity provider, API, S3 engine, boto3, s3fs.
CA_BUNDLE_VARIABLES = ("AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def trusted_cas(verify: bool | str) -> bool | str:
    """``verify`` as given to a library with a CA store of its own.

    requests and botocore trust certifi's bundle when given ``True``;
    urllib3 (the S3 engine, the API client) and curl trust the system's.
    ``True`` becomes the system's CA file (OpenSSL's default, the one
    ``SSL_CERT_FILE`` moves), so every connection trusts the same store;
    it stays ``True`` (the library's own default) where Python's OpenSSL
    has no CA file, as on python.org builds for macOS.
    """
    if verify is not True:
        return verify
    import ssl

    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return True


def default_cache_dir() -> Path:
    """``STS_BRIDGE_CACHE_DIR`` or the per-user cache directory."""
    return Path(cache_dir())


def config_file_path() -> Path:
    """``STS_BRIDGE_CONFIG_FILE`` or ``<user config dir>/sts-bridge/config``."""
    env = os.environ.get("STS_BRIDGE_CONFIG_FILE")
    if env:
        return Path(env).expanduser()
    return Path(user_dir("config")) / "config"


@dataclass(frozen=True)
class Settings:
    """Every setting of sts-bridge, resolved. Build it with :func:`load_settings`.

    ``sources`` maps a field name to where its value came from (``argument``,
    ``env TERRAPI_X``, ``profile 'p' in /path`` or ``default``).
    """

    api_url: str | None = None
    issuer: str | None = None
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = field(default=None, repr=False)
    scopes: tuple[str, ...] = ()
    audience: str | None = None
    workspace: str | None = None
    ca_bundle: str | None = None
    insecure: bool = False
    token: str | None = field(default=None, repr=False)
    token_command: str | None = None
    flow: str | None = None
    profile: str = "default"
    cache_dir: Path = field(default_factory=default_cache_dir)
    leeway: float = DEFAULT_LEEWAY
    token_cache: bool = True
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        remember_secret(self.client_secret, self.token)

    @property
    def verify(self) -> bool | str:
        """What to pass as ``verify=`` to requests/boto3: False, a CA bundle path, or True."""
        if self.insecure:
            return False
        if self.ca_bundle:
            return self.ca_bundle
        return True

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            if f.name in ("client_secret", "token") and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def source(self, name: str) -> str:
        """Where the value of ``name`` came from (``default`` when not recorded)."""
        return self.sources.get(name, "default")

    def require(self, *names: str) -> None:
        """Raise :class:`ConfigurationError` when any of ``names`` is unset."""
        require(self, *names)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (recorded as explicit arguments)."""
        sources = dict(self.sources)
        for key in changes:
            sources[key] = "argument"
        return dataclasses.replace(self, sources=sources, **changes)


def _looked_at(settings: Settings, name: str) -> str:
    spec = _BY_NAME.get(name)
    places = [f"the {name}= argument"]
    if spec is not None and spec.env:
        places.append(f"the environment variable {spec.env}")
    if spec is not None and spec.ini:
        where = str(settings.config_file) if settings.config_file else str(config_file_path())
        places.append(f"key {spec.ini!r} of profile {settings.profile!r} in {where}")
    return ", ".join(places)


def require(settings: Settings, *names: str) -> None:
    """Raise :class:`ConfigurationError` naming every place looked at for unset ``names``."""
    missing = [n for n in names if getattr(settings, n) in (None, "", ())]
    if not missing:
        return
    parts = []
    for name in missing:
        spec = _BY_NAME.get(name)
        label = spec.env if spec is not None and spec.env else name
        parts.append(f"{label} is not set (looked at {_looked_at(settings, name)})")
    first = _BY_NAME.get(missing[0])
    env = first.env if first is not None and first.env else missing[0]
    raise ConfigurationError(
        "; ".join(parts),
        hint=f"export {env}=... or add it to your profile (see `sts-bridge --help`)",
    )


def _read_profile(path: Path, profile: str, explicit_profile: bool) -> dict[str, str]:
    origin = " (STS_BRIDGE_CONFIG_FILE)" if os.environ.get("STS_BRIDGE_CONFIG_FILE") else ""
    try:
        # configparser.read() skips files it cannot open without a word: a
        # directory or an unreadable file would silently mean "no profile".
        # A FIFO would block open() forever: read_regular_file refuses it at once.
        text = read_regular_file(path).decode("utf-8")
    except FileNotFoundError:
        text = None
    except NotRegularFileError as exc:
        raise ConfigurationError(
            f"the configuration file {path}{origin} cannot be read: not a regular file",
            hint="point STS_BRIDGE_CONFIG_FILE at an INI file, or unset it",
        ) from exc
    except OSError as exc:
        raise ConfigurationError(
            f"the configuration file {path}{origin} cannot be read: "
            f"{exc.strerror or type(exc).__name__}",
            hint="point STS_BRIDGE_CONFIG_FILE at a readable INI file, or unset it",
        ) from exc
    except UnicodeDecodeError as exc:
        raise _unparsable(path, origin, exc) from exc
    if text is None:
        if explicit_profile and profile != "default":
            raise ConfigurationError(
                f"profile {profile!r} requested but there is no configuration file at {path}",
                hint="create it, set STS_BRIDGE_CONFIG_FILE, or drop --profile/TERRAPI_PROFILE",
            )
        return {}
    import configparser  # only with a file to read: a third of config's import time

    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise _unparsable(path, origin, exc) from exc
    for section in (f"profile {profile}", profile) if profile != "default" else ("default",):
        if parser.has_section(section):
            return dict(parser.items(section))
    if profile != "default":
        available = [s.removeprefix("profile ") for s in parser.sections()]
        raise ConfigurationError(
            f"no profile {profile!r} in {path} (profiles there: {', '.join(available) or 'none'})",
            hint=f"add a [profile {profile}] section or pick another profile",
        )
    return {}


def _unparsable(path: Path, origin: str, exc: Exception) -> ConfigurationError:
    return ConfigurationError(
        f"the configuration file {path}{origin} cannot be parsed: {exc.__class__.__name__}",
        hint="fix the file (INI format: [default] or [profile NAME] sections)",
    )


def load_settings(**explicit: Any) -> Settings:
    """Resolve every setting: explicit argument > environment > profile > default.

    ``explicit`` takes the field names of :class:`Settings`; ``None`` means
    "not given". Raises :class:`ConfigurationError` for unparsable values,
    a missing named profile, or a client secret without a client id.
    """
    known = {f.name for f in dataclasses.fields(Settings)} - {"sources", "config_file"}
    unknown = set(explicit) - known
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    given = {k: v for k, v in explicit.items() if v is not None}

    sources: dict[str, str] = {}
    if "profile" in given:
        profile, sources["profile"] = str(given["profile"]), "argument"
    elif os.environ.get("TERRAPI_PROFILE"):
        profile, sources["profile"] = os.environ["TERRAPI_PROFILE"], "env TERRAPI_PROFILE"
    else:
        profile = "default"
    path = config_file_path()
    ini = _read_profile(path, profile, explicit_profile="profile" in sources)

    values: dict[str, Any] = {}
    for spec in _FIELDS:
        if spec.name in given:
            values[spec.name] = _explicit_value(spec, given[spec.name])
            sources[spec.name] = "argument"
            continue
        raw, origin = None, ""
        if spec.env and os.environ.get(spec.env, "") != "":
            raw, origin = os.environ[spec.env], f"env {spec.env}"
        elif spec.ini and spec.ini in ini:
            raw, origin = ini[spec.ini], f"profile {profile!r} in {path}"
        if raw is None:
            continue
        try:
            parsed = spec.parse(raw)
        except ValueError as exc:
            where = spec.env if origin.startswith("env") else f"{spec.ini} in {path}"
            raise ConfigurationError(
                f"invalid value for {where}: {exc}",
                hint="fix the value (see the README, section Configuration)",
            ) from exc
        if parsed is None:
            continue
        if spec.name in _PATHS and origin.startswith("profile"):
            parsed = _relative_to_file(parsed, path)
        values[spec.name], sources[spec.name] = parsed, origin

    if "ca_bundle" not in values:
        for name in CA_BUNDLE_VARIABLES:
            if os.environ.get(name, "").strip():
                values["ca_bundle"], sources["ca_bundle"] = os.environ[name].strip(), f"env {name}"
                break

    settings = Settings(
        profile=profile,
        config_file=path if ini else None,
        sources=sources,
        **values,
    )
    if settings.flow is not None:
        flow = settings.flow.strip().lower().replace("_", "-")
        if flow not in FLOWS and ":" not in settings.flow:
            raise ConfigurationError(
                f"unknown flow {settings.flow!r} (from {settings.source('flow')})",
                hint=f"use one of {', '.join(FLOWS)} or 'module:attribute' of an authenticator",
            )
        if ":" not in settings.flow:
            settings = dataclasses.replace(settings, flow=flow)
    _check_ca_bundle(settings)
    _check_cache_dir(settings)
    if settings.client_secret and "client_id" not in sources:
        raise ConfigurationError(
            "a client secret is configured but no client id "
            f"(the secret came from {settings.source('client_secret')})",
            hint="set TERRAPI_CLIENT_ID to the id of the confidential client",
        )
    return settings


#: Settings that name a file or folder: relative in a profile = relative to the file.
_PATHS = ("cache_dir", "ca_bundle")


def _relative_to_file(value: Any, config_file: Path) -> Any:
    """A relative path written in the configuration file is relative to that file's
    folder, not to wherever a command happens to run (the token cache would
    follow the current directory)."""
    as_path = Path(value).expanduser()
    if as_path.is_absolute():
        return value
    resolved = config_file.parent.resolve() / as_path
    return resolved if isinstance(value, Path) else str(resolved)


def _explicit_value(spec: _Field, value: Any) -> Any:
    """An argument of ``load_settings`` / ``Client.from_env``, checked like the same
    text from the environment; the wrong type is an :class:`InvalidArgumentError`
    (a ``ValueError``) naming the argument, never an ``AttributeError`` later."""
    from sts_bridge.errors import InvalidArgumentError

    def wrong(expected: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"{spec.name} must be {expected}, not {type(value).__name__} {value!r}"[:200],
            hint=f"pass {spec.name} as {expected}",
        )

    if spec.name == "scopes":
        if isinstance(value, str):
            return _parse_scopes(value)
        if not isinstance(value, (list, tuple, set, frozenset)) or not all(
            isinstance(v, str) for v in value
        ):
            raise wrong("a string or a list of strings")
        return tuple(value)
    if spec.name == "cache_dir":
        if not isinstance(value, (str, os.PathLike)):
            raise wrong("a path (str or os.PathLike)")
        return Path(value).expanduser()
    if spec.name in ("insecure", "token_cache"):
        if isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise wrong("True or False")
    elif spec.name == "leeway":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        elif not isinstance(value, str):
            raise wrong("a number of seconds")
    elif not isinstance(value, str):
        raise wrong("a string")
    try:
        parsed = spec.parse(value)
    except ValueError as exc:
        raise ConfigurationError(
            f"invalid value for {spec.name}: {exc}",
            hint="fix the argument (see the README, section Configuration)",
        ) from None
    return value if parsed is None else parsed


def _origin(settings: Settings, name: str) -> str:
    spec = _BY_NAME[name]
    source = settings.source(name)
    if source.startswith("env "):
        return source.removeprefix("env ")  # the variable it came from (CA_BUNDLE_VARIABLES too)
    if source.startswith("profile") and spec.ini:
        return f"{spec.ini} ({source})"
    return name


def _check_ca_bundle(settings: Settings) -> None:
    """A CA bundle that is missing or not PEM certificates fails here, not as a TLS error later."""
    if not settings.ca_bundle or settings.insecure:
        return
    where = _origin(settings, "ca_bundle")
    path = Path(settings.ca_bundle).expanduser()
    hint = "point it at a PEM file of CA certificates (-----BEGIN CERTIFICATE-----)"
    if not path.is_file():
        state = "is not a file" if path.exists() else "does not exist"
        raise ConfigurationError(f"the CA bundle {path} from {where} {state}", hint=hint)
    try:
        problem = pem_certificates_problem(path.read_bytes())
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    if problem is not None:
        raise ConfigurationError(
            f"the CA bundle {path} from {where} holds no usable PEM certificate ({problem})",
            hint=hint,
        )


_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"
_BASE64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def pem_certificates_problem(data: bytes) -> str | None:
    """Why ``data`` is not a bundle of PEM certificates, or ``None``.

    Every ``BEGIN CERTIFICATE`` block must be base64 of one DER sequence of
    its stated length. Structural, not a parse: loading the system's bundle
    into an ``SSLContext`` costs tens of milliseconds on every command, and
    this check runs whenever one of the CA variables is set.
    """
    import binascii

    blocks = 0
    start = data.find(_PEM_BEGIN)
    while start != -1:
        end = data.find(_PEM_END, start)
        if end == -1:
            return "a certificate without its END line"
        body = b"".join(data[start + len(_PEM_BEGIN) : end].split())
        if len(body) % 4 or body.rstrip(b"=").translate(None, _BASE64) or body.count(b"=") > 2:
            return "a certificate that is not base64"
        der = binascii.a2b_base64(body)
        if not _der_sequence(der):
            return "a certificate that is not DER"
        blocks += 1
        start = data.find(_PEM_BEGIN, end)
    return None if blocks else "no -----BEGIN CERTIFICATE----- block"


def _der_sequence(der: bytes) -> bool:
    """Whether ``der`` is exactly one DER SEQUENCE (tag 0x30 and its length)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    first = der[1]
    if first < 0x80:
        return len(der) == 2 + first
    count = first & 0x7F
    if not 1 <= count <= 4 or len(der) < 2 + count:
        return False
    return len(der) == 2 + count + int.from_bytes(der[2 : 2 + count], "big")


def _check_cache_dir(settings: Settings) -> None:
    """A configured cache dir (or the first existing folder above it) must be a writable directory.

    Only a cache dir someone configured is checked: the default one may
    live on a read-only home (a container, a Dask worker) where commands
    that need no cache still work.
    """
    if settings.source("cache_dir") == "default":
        return
    path = Path(settings.cache_dir)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.is_dir() and os.access(probe, os.W_OK | os.X_OK):
        return
    where = _origin(settings, "cache_dir")
    problem = "is not a directory" if not probe.is_dir() else "is not writable"
    raise ConfigurationError(
        f"cannot use {path} as the cache directory ({where}): {probe} {problem}",
        hint="point STS_BRIDGE_CACHE_DIR at a directory you can write to",
    )
