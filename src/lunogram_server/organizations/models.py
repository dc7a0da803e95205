"""Request and response shapes of the organization and membership routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, StringConstraints

from lunogram_server.identity import IdentifierRef, Identifiers, StrictModel
from lunogram_server.users.models import Absent, ExternalIDOut


class UpsertOrganization(StrictModel):
    identifier: Identifiers
    name: Annotated[str, StringConstraints(max_length=1024)] | None = None
    data: dict[str, Any] | None = None


class AddMember(StrictModel):
    organization: IdentifierRef
    user: IdentifierRef
    data: dict[str, Any] | None = None


class RemoveMember(StrictModel):
    organization: IdentifierRef
    user: IdentifierRef


class Organization(BaseModel):
    id: UUID
    project_id: UUID
    identifier: list[ExternalIDOut]
    name: str | Absent = None
    data: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class Member(BaseModel):
    user_id: UUID
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class OrganizationDetail(Organization):
    """The admin view: the organization, its member count and its first members (oldest first)."""

    member_count: int
    members: list[Member]
