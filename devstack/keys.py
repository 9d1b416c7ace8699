"""The identity provider's signing key.

radosgw's AssumeRoleWithWebIdentity verifies tokens with the certificate in
the JWKS ``x5c`` member (and only the first key), so the key comes with a
self-signed certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def generate_signing_jwk(common_name: str = "sts-bridge devstack") -> dict[str, Any]:
    """A fresh RS256 private JWK (with ``kid`` and ``x5c``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    priv = key.private_numbers()
    pub = priv.public_numbers
    return {
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": uuid.uuid4().hex[:16],
        "n": _b64url_uint(pub.n),
        "e": _b64url_uint(pub.e),
        "d": _b64url_uint(priv.d),
        "p": _b64url_uint(priv.p),
        "q": _b64url_uint(priv.q),
        "dp": _b64url_uint(priv.dmp1),
        "dq": _b64url_uint(priv.dmq1),
        "qi": _b64url_uint(priv.iqmp),
        "x5c": [base64.b64encode(der).decode("ascii")],
    }


def public_jwk(private: dict[str, Any]) -> dict[str, Any]:
    """The public half of :func:`generate_signing_jwk`'s key."""
    return {k: private[k] for k in ("kty", "use", "alg", "kid", "n", "e", "x5c")}
