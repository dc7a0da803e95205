"""The identifiers a request names a user or organization by (docs/api.md "Identifiers")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

DEFAULT_SOURCE = "default"
ANONYMOUS_SOURCE = "anonymous"
MAX_IDENTIFIERS = 100


def not_blank(value: str) -> str:
    # a field validator (not a model validator), so the error names `identifier[i].external_id`
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Source = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ExternalIdValue = Annotated[str, StringConstraints(min_length=1, max_length=512), AfterValidator(not_blank)]


class StrictModel(BaseModel):
    """Request bodies reject unknown fields, so a typo (`externalId`) is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ExternalID(StrictModel):
    source: Source = DEFAULT_SOURCE
    external_id: ExternalIdValue
    metadata: dict[str, Any] | None = None


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


def stored_size_at_least(value: Any) -> int:
    """A lower bound of the bytes `value` takes as stored jsonb: the characters of its keys and strings (each
    stored as at least one byte, unescaped). Cheap, so that data sure to exceed its cap is refused before it
    travels to the database, where the exact check is (identity/sql/limits.sql)."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += sum(len(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total
