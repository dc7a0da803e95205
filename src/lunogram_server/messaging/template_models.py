"""Request and response shapes of the templates and snippets admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lunogram_server.identity import ExternalID
from lunogram_server.messaging.templates import (
    MAX_SNIPPET_NAME,
    MAX_SOURCE_CHARS,
    MAX_VARIANTS,
    SNIPPET_NAME,
    Channel,
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


Variants = dict[str, dict[str, Any]]


class TemplateSource(_Strict):
    """What `POST /api/admin/templates/validate` checks: the channel and its per-locale variants."""

    channel: Channel
    default_locale: str | None = Field(default=None, max_length=35)
    variants: Variants = Field(min_length=1, max_length=MAX_VARIANTS)


class CreateTemplate(TemplateSource):
    """`variants`: locale (BCP 47) -> the channel's fields. `default_locale` may be left out when there is
    one variant."""

    name: str = Field(min_length=1, max_length=255)
    subscription_group_id: UUID | None = None

    _name = field_validator("name")(_not_blank)


class UpdateTemplate(_Strict):
    """Fields left out keep their value; `variants`, when given, replaces them all. The channel is fixed."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    default_locale: str | None = Field(default=None, max_length=35)
    subscription_group_id: UUID | None = None
    variants: Variants | None = Field(default=None, min_length=1, max_length=MAX_VARIANTS)

    _name = field_validator("name")(_not_blank)


class PreviewTemplate(_Strict):
    """The user to render for, named by `user` (identifiers, as in the Client API) or `user_id`."""

    user: list[ExternalID] | None = Field(default=None, min_length=1, max_length=100)
    user_id: UUID | None = None
    locale: str | None = Field(default=None, max_length=35, description="default: the user's locale")
    data: dict[str, Any] | None = Field(default=None, description="per-send data (`data` in templates)")
    event: dict[str, Any] | None = Field(default=None, description="the entering event (`event` in templates)")
    run: dict[str, Any] | None = Field(default=None, description="journey run data (`run` in templates)")

    @model_validator(mode="after")
    def _one_user(self) -> PreviewTemplate:
        if (self.user is None) == (self.user_id is None):
            raise ValueError("name the user by `user` (identifiers) or by `user_id`, one of the two")
        return self


class CreateSnippet(_Strict):
    name: str = Field(min_length=1, max_length=MAX_SNIPPET_NAME, pattern=SNIPPET_NAME.pattern)
    source: str = Field(max_length=MAX_SOURCE_CHARS)


class UpdateSnippet(_Strict):
    source: str = Field(max_length=MAX_SOURCE_CHARS)


class TemplateDetail(BaseModel):
    id: UUID
    name: str
    channel: Channel
    default_locale: str
    subscription_group_id: UUID | None
    snippets: list[str]  # snippet names its variants render or include
    variants: dict[str, dict[str, Any]]
    created_at: datetime
    updated_at: datetime


class TemplateSummary(BaseModel):
    id: UUID
    name: str
    channel: Channel
    default_locale: str
    subscription_group_id: UUID | None
    locales: list[str]
    created_at: datetime
    updated_at: datetime


class Validated(BaseModel):
    valid: Literal[True]
    default_locale: str
    snippets: list[str]


class RenderedMessage(BaseModel):
    """The rendered message: `channel`, `locale` and the channel's fields (email: subject, preheader, html,
    text; sms/whatsapp: body; push: title, body, url, data; inbox: title, body, data; webhook: url, method,
    headers, body)."""

    model_config = ConfigDict(extra="allow")

    channel: Channel
    locale: str
    user_id: UUID


class SnippetDetail(BaseModel):
    id: UUID
    name: str
    source: str
    snippets: list[str]
    created_at: datetime
    updated_at: datetime


class SnippetSummary(BaseModel):
    id: UUID
    name: str
    snippets: list[str]
    size: int  # characters of source
    created_at: datetime
    updated_at: datetime
