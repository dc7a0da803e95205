"""Named SQL with per-kind templates: {entity} (user, organization), {entities} (its table), {identifiers}
(its identifier table) and {history} (its event table), rendered for users and organizations."""

from __future__ import annotations

from lunogram_server.db import load_queries
from lunogram_server.events.models import Kind

_TOKENS: dict[Kind, dict[str, str]] = {
    "user": {"entity": "user", "entities": "users", "identifiers": "user_identifiers", "history": "user_events"},
    "organization": {
        "entity": "organization",
        "entities": "organizations",
        "identifiers": "organization_identifiers",
        "history": "organization_events",
    },
}


def _render(text: str, kind: Kind) -> str:
    for token, value in _TOKENS[kind].items():
        text = text.replace("{" + token + "}", value)
    return text


def load_kind_queries(package: str) -> tuple[dict[str, str], dict[Kind, dict[str, str]]]:
    """A package's sql/queries.sql as (queries without templates, templates rendered for each kind)."""
    raw = load_queries(package)
    shared = {name: text for name, text in raw.items() if "{" not in text}
    by_kind: dict[Kind, dict[str, str]] = {
        kind: {name: _render(text, kind) for name, text in raw.items() if "{" in text} for kind in _TOKENS
    }
    return shared, by_kind


SHARED, BY_KIND = load_kind_queries("lunogram_server.events")
