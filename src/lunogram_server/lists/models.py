"""Request and response shapes of the lists admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lunogram_server.identity import ExternalID
from lunogram_server.lists.rules import Node


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _not_blank(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("must not be blank")
    return value


class CreateList(_Strict):
    """A list with `rule` is rule-based (members are who the rule matches); without, static."""

    name: str = Field(min_length=1, max_length=255)
    rule: Node | None = None

    _name_not_blank = field_validator("name")(_not_blank)


class UpdateList(_Strict):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    rule: Node | None = None

    _name_not_blank = field_validator("name")(_not_blank)


class PreviewList(_Strict):
    """A rule to count users for, as it would be saved (`list_id`: the list it is for, if any, so that a
    rule referring to that list is refused as saving would)."""

    rule: Node
    list_id: UUID | None = None


class PreviewCount(BaseModel):
    count: int  # users the rule matches now, at most 1,000,000
    capped: bool  # true: at least that many


class MemberChange(_Strict):
    """Users by their identifiers: each entry names one user (as in the Client API's `identifier`)."""

    users: list[list[ExternalID]] = Field(min_length=1, max_length=10_000)

    @field_validator("users")
    @classmethod
    def _each_named(cls, value: list[list[ExternalID]]) -> list[list[ExternalID]]:
        for n, identifiers in enumerate(value):
            if not identifiers:
                raise ValueError(f"users[{n}]: needs at least one identifier")
        return value


class RecomputeProgress(BaseModel):
    done: int  # users evaluated so far
    total: int  # users in the project when the recompute started
    started_at: datetime


class ListDetail(BaseModel):
    id: UUID
    project_id: UUID
    name: str
    kind: Literal["static", "rule"]
    rule: dict[str, Any] | None
    state: Literal["ready", "recomputing", "failed"]
    error: str | None
    progress: RecomputeProgress | None  # while recomputing, once the first chunk is done
    rule_version: int
    computed_at: datetime | None
    member_count: int
    created_at: datetime
    updated_at: datetime


class ListSummary(BaseModel):
    id: UUID
    name: str
    kind: Literal["static", "rule"]
    state: Literal["ready", "recomputing", "failed"]
    created_at: datetime
    updated_at: datetime


class Member(BaseModel):
    user_id: UUID
    joined_at: datetime
    identifier: list[dict[str, str]]


class MemberPage(BaseModel):
    members: list[Member]
    next_cursor: str | None


class MemberCount(BaseModel):
    changed: int


class ImportError(BaseModel):
    line: int
    error: str


class ImportStatus(BaseModel):
    id: UUID
    list_id: UUID
    status: Literal["queued", "running", "done"]
    total_rows: int
    processed_rows: int
    imported: int
    failed: int
    errors: list[ImportError]
    created_at: datetime
    updated_at: datetime
