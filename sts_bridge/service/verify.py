"""Check the caller of a service: ``CallerVerifier`` turns a bearer token into a ``Caller``.

The checks, in this order, before any claim is trusted (authlib's resource
protector and flaat do the same):

1. the token is a compact JWS whose ``alg`` is on the allow-list (never
   ``none``, never an ``HS*`` algorithm: those would let anyone holding the
   issuer's *public* key sign);
2. the signature, with the issuer's key named by ``kid`` (:class:`IssuerKeys`
   fetches the JWKS, refreshed on an unknown ``kid``, rate-limited);
3. ``iss`` is the issuer, ``aud`` names this service, ``exp`` is in the
   future and ``nbf`` / ``iat`` not (a small leeway for clock skew);
4. the :class:`CallerRequirements`: scopes (``scope`` or ``scp``), then claim
   requirements (any of / all of the values of ``groups``, ``wlcg.groups``,
   ``eduperson_entitlement``...).

A token that is not a JWT (an opaque token) replaces 1-2 by asking the
issuer (RFC 7662, :class:`TokenIntrospection`, when the verifier has one):
``active: false`` is a 401, and the claims it answers go through 3-4
(``iss`` only when the answer names it).

A failure of 1-3 is a 401 (``invalid_token``), of 4 a 403
(``insufficient_scope``): :class:`~sts_bridge.errors.CallerRefusedError`,
whose one-line message says which check failed and never holds the token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from sts_bridge._redact import remember_secret
from sts_bridge.auth.base import unverified_claims
from sts_bridge.clock import Clock, utc_now
from sts_bridge.errors import CallerRefusedError
from sts_bridge.service.introspection import TokenIntrospection
from sts_bridge.service.issuer_keys import DEFAULT_MIN_REFRESH_INTERVAL, IssuerKeys

__all__ = [
    "DEFAULT_ALGORITHMS",
    "Caller",
    "CallerRequirements",
    "CallerVerifier",
    "ClaimRequirement",
    "all_of",
    "any_of",
]

logger = logging.getLogger("sts_bridge.service")

#: Asymmetric algorithms only: a service holds public keys, never a shared secret.
DEFAULT_ALGORITHMS: tuple[str, ...] = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: Seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
DEFAULT_LEEWAY = 30.0
# RFC 6750 section 2.1: the characters of a bearer token.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class ClaimRequirement:
    """The caller's ``claim`` must hold any (or all) of ``values``.

    The claim may be a list of strings, one string, or a space-separated
    string; its name is taken literally (``wlcg.groups`` is one claim).
    """

    claim: str
    values: tuple[str, ...]
    match: Literal["any", "all"] = "any"

    def satisfied_by(self, claims: Mapping[str, Any]) -> bool:
        held = _as_strings(claims.get(self.claim))
        if self.match == "all":
            return all(v in held for v in self.values)
        return any(v in held for v in self.values)

    def describe(self) -> str:
        word = "all" if self.match == "all" else "one"
        return f"{word} of {', '.join(self.values)} in {self.claim}"


def any_of(claim: str, *values: str) -> ClaimRequirement:
    """The caller's ``claim`` holds at least one of ``values``."""
    return ClaimRequirement(claim, tuple(values), "any")


def all_of(claim: str, *values: str) -> ClaimRequirement:
    """The caller's ``claim`` holds every one of ``values``."""
    return ClaimRequirement(claim, tuple(values), "all")


@dataclass(frozen=True)
class CallerRequirements:
    """What a caller's valid token must also carry (else 403).

    ``scopes``: every one of them; ``claims``: every :class:`ClaimRequirement`.
    """

    scopes: tuple[str, ...] = ()
    claims: tuple[ClaimRequirement, ...] = ()


@dataclass(frozen=True)
class Caller:
    """A verified caller: who (``issuer`` + ``subject``), what they hold, until when.

    ``token`` is the bearer token itself (needed to act for the caller); it
    never appears in ``repr``.
    """

    issuer: str
    subject: str
    claims: Mapping[str, Any] = field(repr=False)
    scopes: frozenset[str]
    expiry: datetime
    token: str = field(repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this user across requests: ``(issuer, subject)``."""
        return (self.issuer, self.subject)

    @property
    def username(self) -> str | None:
        value = self.claims.get("preferred_username")
        return value if isinstance(value, str) else None


class CallerVerifier:
    """Checks bearer tokens of one issuer addressed to one service (see the module docstring).

    :param issuer: the issuer URL, exactly as the tokens' ``iss`` says.
    :param audience: this service's name in the tokens' ``aud``.
    :param requirements: what every caller must carry (per-route
        requirements are passed to :meth:`verify`).
    :param algorithms: the allow-list (``none`` and ``HS*`` are refused here).
    :param leeway: seconds of clock skew tolerated.
    :param verify: TLS verification of the JWKS fetch (``True``, ``False``, CA bundle).
    :param keys: an :class:`IssuerKeys` (default: built from ``issuer``).
    :param introspection: a :class:`TokenIntrospection` for opaque tokens
        (default: none, an opaque token is refused).
    :param clock: "now" (tests).
    """

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        requirements: CallerRequirements | None = None,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: float = DEFAULT_LEEWAY,
        verify: bool | str = True,
        min_refresh_interval: float = DEFAULT_MIN_REFRESH_INTERVAL,
        keys: IssuerKeys | None = None,
        introspection: TokenIntrospection | None = None,
        clock: Clock | None = None,
    ) -> None:
        allowed = tuple(algorithms)
        unsafe = [a for a in allowed if a.lower() == "none" or a.upper().startswith("HS")]
        if unsafe or not allowed:
            raise ValueError(
                f"algorithms must be asymmetric signature algorithms, not {unsafe or 'nothing'}"
            )
        if not audience:
            raise ValueError("a service must name its audience")
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.requirements = requirements or CallerRequirements()
        self.algorithms = allowed
        self.leeway = float(leeway)
        self.keys = keys or IssuerKeys(
            self.issuer, verify=verify, min_refresh_interval=min_refresh_interval
        )
        self.introspection = introspection
        self._clock: Clock = clock or utc_now

    def __repr__(self) -> str:
        return f"CallerVerifier(issuer={self.issuer!r}, audience={self.audience!r})"

    def verify_header(
        self, authorization: str | None, requirements: CallerRequirements | None = None
    ) -> Caller:
        """Verify an ``Authorization`` header value (``Bearer <token>``); see :meth:`verify`."""
        if not authorization or not authorization.strip():
            raise CallerRefusedError("no bearer token in the Authorization header", error=None)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise CallerRefusedError("the Authorization header is not 'Bearer <token>'")
        return self.verify(token.strip(), requirements)

    def verify(self, token: str, requirements: CallerRequirements | None = None) -> Caller:
        """The :class:`Caller` of ``token``, checked against the verifier's and ``requirements``.

        Raises :class:`~sts_bridge.errors.CallerRefusedError` (401 or 403),
        or :class:`~sts_bridge.errors.ProviderUnreachableError` when the
        issuer's keys cannot be fetched at all.
        """
        claims = self._verified_claims(token)
        caller = self._caller(token, claims)
        for wanted in (self.requirements, requirements or CallerRequirements()):
            self._check_requirements(caller, wanted)
        remember_secret(token)
        return caller

    # -- the checks ------------------------------------------------------------

    def _verified_claims(self, token: str) -> dict[str, Any]:
        from joserfc import jws, jwt
        from joserfc.errors import JoseError

        if token.count(".") != 2 and self.introspection is not None:
            return self._introspected_claims(token, self.introspection)
        if token.count(".") != 2:
            raise CallerRefusedError("the token is not a signed JWT")
        try:
            header = dict(jws.extract_compact(token.encode("ascii")).protected)
        except (JoseError, ValueError, TypeError, UnicodeError):
            raise CallerRefusedError("the token is not a signed JWT") from None
        # A foreign issuer is refused before any key lookup: its tokens must
        # not make this service fetch keys (the claim is re-checked once signed).
        if str(unverified_claims(token).get("iss", "")).rstrip("/") != self.issuer:
            raise CallerRefusedError("the token was issued by another issuer")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise CallerRefusedError(f"the token's algorithm {_short(alg)} is not accepted")
        kid = header.get("kid")
        key = self.keys.key(kid if isinstance(kid, str) else None)
        if key is None:
            raise CallerRefusedError("the token is signed by a key the issuer does not publish")
        try:
            decoded = jwt.decode(token, key, algorithms=[str(alg)])
        except (JoseError, ValueError, TypeError):
            raise CallerRefusedError("the token's signature is not valid") from None
        claims = dict(decoded.claims)
        self._check_registered_claims(claims)
        return claims

    def _introspected_claims(self, token: str, introspection: TokenIntrospection) -> dict[str, Any]:
        if not _BEARER_TOKEN.fullmatch(token):
            raise CallerRefusedError("the token is neither a JWT nor an opaque bearer token")
        claims = introspection.claims(token)
        self._check_registered_claims(claims, issuer_required=False)
        return claims

    def _check_registered_claims(
        self, claims: Mapping[str, Any], *, issuer_required: bool = True
    ) -> None:
        named = issuer_required or claims.get("iss") is not None
        if named and str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise CallerRefusedError("the token was issued by another issuer")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else list(aud or [])
        if self.audience not in audiences:
            raise CallerRefusedError(f"the token is not addressed to {self.audience} (aud)")
        now = self._clock()
        skew = timedelta(seconds=self.leeway)
        exp = _instant(claims.get("exp"))
        if exp is None:
            raise CallerRefusedError("the token has no expiry (exp)")
        if exp + skew <= now:
            raise CallerRefusedError("the token has expired")
        nbf = _instant(claims.get("nbf"))
        if nbf is not None and nbf - skew > now:
            raise CallerRefusedError("the token is not valid yet (nbf)")
        iat = _instant(claims.get("iat"))
        if iat is not None and iat - skew > now:
            raise CallerRefusedError("the token was issued in the future (iat)")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise CallerRefusedError("the token names no subject (sub)")

    def _caller(self, token: str, claims: dict[str, Any]) -> Caller:
        expiry = _instant(claims["exp"])
        assert expiry is not None
        scopes = _as_strings(claims.get("scope")) | _as_strings(claims.get("scp"))
        return Caller(
            issuer=self.issuer,
            subject=str(claims["sub"]),
            claims=claims,
            scopes=frozenset(scopes),
            expiry=expiry,
            token=token,
        )

    @staticmethod
    def _check_requirements(caller: Caller, wanted: CallerRequirements) -> None:
        missing = [s for s in wanted.scopes if s not in caller.scopes]
        if missing:
            raise CallerRefusedError(
                f"the token lacks the scope {' '.join(missing)}",
                status=403,
                error="insufficient_scope",
                scope=" ".join(wanted.scopes),
            )
        for requirement in wanted.claims:
            if not requirement.satisfied_by(caller.claims):
                raise CallerRefusedError(
                    f"the caller lacks {requirement.describe()}",
                    status=403,
                    error="insufficient_scope",
                )


def _as_strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, (list, tuple)):
        return {v for v in value if isinstance(v, str)}
    return set()


def _instant(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), timezone.utc)
    return None


def _short(value: Any) -> str:
    text = "".join(c for c in str(value) if c.isprintable())
    return repr(text[:20])
