"""Compact JWS signing for the provider tokens (ES256 for APNs, RS256 for Google service accounts).

Only signing: the providers make tokens, they never check any. A few lines with `cryptography` spare a
dependency; ES256 signatures are the raw 64-byte r||s JWS wants, not the DER `cryptography` returns.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_private_key(pem: str, what: str) -> PrivateKey:
    """A PEM private key (PKCS#8 or traditional); ValueError naming `what` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem.strip().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{what}: is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{what}: must be an EC or RSA private key")
    return key


def sign(header: dict[str, Any], claims: dict[str, Any], key: PrivateKey) -> str:
    """`header.claims.signature`, ES256 for an EC P-256 key, RS256 for an RSA key."""
    header = {**header, "alg": "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"}
    signing_input = f"{b64url(orjson.dumps(header))}.{b64url(orjson.dumps(claims))}".encode("ascii")
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode('ascii')}.{b64url(signature)}"
