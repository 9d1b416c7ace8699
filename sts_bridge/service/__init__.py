"""A service acting for its callers: check each caller's token, act in that caller's workspace.

* :mod:`.verify`: :class:`CallerVerifier` (signature against the issuer's
  JWKS, algorithm allow-list, ``iss``/``aud``/``exp``/``nbf``, scopes,
  group/entitlement requirements) -> :class:`Caller`;
* :mod:`.introspection`: :class:`TokenIntrospection` (opaque tokens, RFC 7662,
  a short cache keyed by the token's hash);
* :mod:`.issuer_keys`: :class:`IssuerKeys` (the JWKS, refreshed on an
  unknown ``kid``, rate-limited);
* :mod:`.fastapi_auth`: ``caller_dependency(verifier)`` for FastAPI (imports FastAPI).

Imports: auth, errors, clock (layer 7, beside ``interop``).
"""

from sts_bridge.service.introspection import TokenIntrospection
from sts_bridge.service.issuer_keys import IssuerKeys
from sts_bridge.service.verify import (
    Caller,
    CallerRequirements,
    CallerVerifier,
    ClaimRequirement,
    all_of,
    any_of,
)

__all__ = [
    "Caller",
    "CallerRequirements",
    "CallerVerifier",
    "ClaimRequirement",
    "IssuerKeys",
    "TokenIntrospection",
    "all_of",
    "any_of",
]
