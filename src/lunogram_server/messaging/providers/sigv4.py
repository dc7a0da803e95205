"""AWS Signature Version 4 for one request (what SES v2 wants), with hmac and hashlib.

The steps are AWS's: a canonical request (method, URI, sorted query, signed headers, payload hash), the
string to sign for `date/region/service/aws4_request`, a key derived from the secret by four HMACs, and the
Authorization header naming the signed headers.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

import httpx

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, datestamp: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), datestamp)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_request(method: str, url: httpx.URL, headers: dict[str, str], payload_hash: str) -> tuple[str, str]:
    """(the canonical request, the signed header list); `headers` are the ones to sign, host included."""
    path = quote(url.raw_path.split(b"?", 1)[0].decode("ascii") or "/", safe="/~")
    query = sorted(parse_qsl(url.query.decode("ascii"), keep_blank_values=True))
    canonical_query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in query)
    canonical = {name.lower(): " ".join(value.strip().split()) for name, value in headers.items()}
    names = sorted(canonical)
    signed = ";".join(names)
    header_block = "".join(f"{name}:{canonical[name]}\n" for name in names)
    return "\n".join([method.upper(), path, canonical_query, header_block, signed, payload_hash]), signed


def sign(
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    session_token: str | None = None,
    now: datetime | None = None,
) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date, X-Amz-Security-Token (with a session token) and Authorization."""
    parsed = httpx.URL(url)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    datestamp = moment.strftime("%Y%m%d")
    to_sign = {**headers, "Host": parsed.netloc.decode("ascii"), "X-Amz-Date": amz_date}
    if session_token:
        to_sign["X-Amz-Security-Token"] = session_token
    request, signed = canonical_request(method, parsed, to_sign, hashlib.sha256(body).hexdigest())
    scope = f"{datestamp}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()])
    signature = hmac.new(
        signing_key(secret_key, datestamp, region, service), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    authorization = f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    return {**to_sign, "Authorization": authorization}
