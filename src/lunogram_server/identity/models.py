"""The identifiers a request names a user or organization by (CONTRACT.md "ExternalID")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

DEFAULT_SOURCE = "default"
ANONYMOUS_SOURCE = "anonymous"
MAX_IDENTIFIERS = 100

Source = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ExternalIdValue = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class StrictModel(BaseModel):
    """Request bodies reject unknown fields, so a typo (`externalId`) is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ExternalID(StrictModel):
    source: Source = DEFAULT_SOURCE
    external_id: ExternalIdValue
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _not_blank(self) -> ExternalID:
        if not self.external_id.strip():
            raise ValueError("external_id must not be blank")
        return self


Identifiers = Annotated[list[ExternalID], Field(min_length=1, max_length=MAX_IDENTIFIERS)]


def normalize(identifiers: list[ExternalID]) -> list[dict[str, Any]]:
    """Deduplicate by (source, external_id), merging metadata in order; the shape the SQL expects."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for ident in identifiers:
        key = (ident.source, ident.external_id)
        entry = merged.setdefault(key, {"source": ident.source, "external_id": ident.external_id})
        if ident.metadata is not None:
            entry["metadata"] = {**entry.get("metadata", {}), **ident.metadata}
    return list(merged.values())


class IdentifierRef(StrictModel):
    """`{identifier: [...]}`: how deletes and memberships name their target."""

    identifier: Identifiers
