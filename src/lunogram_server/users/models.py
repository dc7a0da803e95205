"""Request and response shapes of the user routes (docs/api.md)."""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any
from uuid import UUID

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel
from pydantic.json_schema import SkipJsonSchema

from lunogram_server.identity import Identifiers, StrictModel

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# BCP 47: language, optional script, optional region, optional variants (e.g. en, es-MX, zh-Hant-TW).
BCP47 = re.compile(
    r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-(?:[A-Za-z]{2}|[0-9]{3}))?(-(?:[A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*$"
)


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    # the host's /usr/share/zoneinfo also holds `localtime` (a link to the host's own zone): not an IANA name
    return frozenset(zoneinfo.available_timezones()) - {"localtime"}


# Plain ASCII addresses (nearly all of them) are checked with one regex; anything else (international
# addresses, quoted local parts, special-use domains) goes through email-validator, which costs ~60 us.
_PLAIN_EMAIL = re.compile(
    r"^(?=.{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?=.{1,253}$)((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})$"
)
_SPECIAL_USE = frozenset(SPECIAL_USE_DOMAIN_NAMES)


@lru_cache(maxsize=8192)
def _email(value: str) -> str:
    plain = _PLAIN_EMAIL.match(value)
    if plain is not None and len(value) <= 254:
        domain = plain.group(1).lower()
        if not any(domain == s or domain.endswith("." + s) for s in _SPECIAL_USE):
            return value[: plain.start(1)] + domain
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"is not a valid email address ({exc})") from None


def _phone(value: str) -> str:
    if not E164.match(value):
        raise ValueError("must be an E.164 phone number: + and 2 to 15 digits, e.g. +31612345678")
    return value


def _timezone(value: str) -> str:
    if value not in _timezones():
        raise ValueError("must be an IANA timezone name, e.g. America/Chicago")
    return value


def _locale(value: str) -> str:
    value = value.replace("_", "-")
    if len(value) > 35 or not BCP47.match(value):
        raise ValueError("must be a BCP 47 language tag, e.g. en or es-MX")
    return value


Email = Annotated[str, AfterValidator(_email)]
Phone = Annotated[str, AfterValidator(_phone)]
Timezone = Annotated[str, AfterValidator(_timezone)]
Locale = Annotated[str, AfterValidator(_locale)]


class UpsertUser(StrictModel):
    """Omitted fields keep their value, null clears one, `data` merges into the stored data (top level)."""

    identifier: Identifiers
    email: Email | None = None
    phone: Phone | None = None
    timezone: Timezone | None = None
    locale: Locale | None = None
    data: dict[str, Any] | None = None


class ExternalIDOut(BaseModel):
    id: UUID
    source: str
    external_id: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


# A response field that is left out when it has no value, never null (upstream Lunogram's published schemas
# have these as optional strings): in the OpenAPI schema a string that is not required.
Absent = SkipJsonSchema[None]


class User(BaseModel):
    id: UUID
    project_id: UUID
    identifier: list[ExternalIDOut]
    email: str | Absent = None
    phone: str | Absent = None
    data: dict[str, Any]
    timezone: str | Absent = None
    locale: str | Absent = None
    has_push_device: bool
    version: int
    created_at: datetime
    updated_at: datetime


class Membership(BaseModel):
    organization_id: UUID
    organization_name: str | Absent = None
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class UserDetail(User):
    """The admin view: the user plus its organization memberships."""

    memberships: list[Membership]
