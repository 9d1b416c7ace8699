"""Bearer JWT verification against the issuer's JWKS (RS256 only).

Every failure is a 401 ProblemDetails whose ``detail`` says why (missing,
malformed, expired, foreign issuer, wrong audience, unknown key, bad
signature) and never contains the token.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import jwt
from connexion.exceptions import OAuthProblem
from connexion.security import BearerSecurityHandler

log = logging.getLogger("sts_bridge_devstack.api")

#: key under which the verified raw token travels in ``token_info`` (never echoed)
RAW_TOKEN_KEY = "__raw_token__"


class TokenVerifier:
    """Verifies access tokens of one issuer for one audience."""

    def __init__(
        self,
        issuer: str,
        audience: str | list[str] | None,
        jwks_uri: str | None = None,
        leeway: float = 2.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.jwks_uri = jwks_uri or f"{self.issuer}/jwks"
        self.leeway = leeway
        self._lock = threading.Lock()
        # keys cached; PyJWKClient re-fetches the JWKS once when a kid is unknown
        self._jwks = jwt.PyJWKClient(self.jwks_uri, cache_keys=True, lifespan=300, timeout=5)

    def _issuer_matches(self, iss: object) -> bool:
        return isinstance(iss, str) and iss.rstrip("/") == self.issuer

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or :class:`OAuthProblem` (401)."""
        if not token:
            raise OAuthProblem(detail="the Authorization header carries an empty bearer token")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise OAuthProblem(detail="the bearer token is not a well-formed JWT") from None
        if header.get("alg") != "RS256":
            raise OAuthProblem(
                detail=f"the token is signed with {header.get('alg')!r}; only RS256 is accepted"
            )
        if not self._issuer_matches(unverified.get("iss")):
            raise OAuthProblem(
                detail="the token was not issued by this platform's identity provider "
                f"(expected issuer {self.issuer})"
            )
        try:
            with self._lock:
                key = self._jwks.get_signing_key_from_jwt(token)
        except jwt.PyJWKClientConnectionError:
            raise OAuthProblem(
                detail="the identity provider's signing keys could not be fetched"
            ) from None
        except jwt.PyJWKClientError:
            raise OAuthProblem(
                detail="the token is signed with a key the identity provider does not publish"
            ) from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=unverified.get("iss"),  # already compared (modulo trailing slash)
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise OAuthProblem(detail="the access token has expired") from None
        except jwt.InvalidAudienceError:
            raise OAuthProblem(
                detail=f"the token is not meant for this API (audience must be {self.audience})"
            ) from None
        except jwt.InvalidSignatureError:
            raise OAuthProblem(detail="the token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise OAuthProblem(detail=f"the token lacks the {exc.claim!r} claim") from None
        except jwt.ImmatureSignatureError:
            raise OAuthProblem(detail="the token is not valid yet") from None
        except jwt.PyJWTError as exc:
            raise OAuthProblem(detail=f"the token is invalid ({type(exc).__name__})") from None
        return claims

    def token_info(self, token: str) -> dict[str, Any]:
        claims = self.verify(token)
        info = dict(claims)
        info[RAW_TOKEN_KEY] = token
        return info


def bearer_handler_class(verifier: TokenVerifier) -> type[BearerSecurityHandler]:
    """A connexion security handler class bound to ``verifier`` (for ``security_map``)."""

    def token_info(token: str) -> dict[str, Any]:
        return verifier.token_info(token)

    class _Bearer(BearerSecurityHandler):
        def _resolve_func(self, security_scheme: dict[str, Any]) -> Any:
            return token_info

        def _get_verify_func(self, token_info_func: Any) -> Any:
            check = self.check_bearer_token(token_info_func)

            def wrapper(request: Any) -> Any:
                auth_type, token = self.get_auth_header_value(request)
                if auth_type is None:
                    raise OAuthProblem(
                        detail="no bearer token: send 'Authorization: Bearer <token>'"
                    )
                if auth_type != "bearer":
                    raise OAuthProblem(
                        detail=f"the Authorization scheme is {auth_type!r}; use 'Bearer <token>'"
                    )
                return check(request, token)

            return wrapper

    return _Bearer
