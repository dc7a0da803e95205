"""The pipeline's named SQL (sql/queries.sql), with its per-kind templates rendered for users and
organizations."""

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


_RAW = load_queries("lunogram_server.events")
SHARED: dict[str, str] = {name: text for name, text in _RAW.items() if "{" not in text}
BY_KIND: dict[Kind, dict[str, str]] = {
    kind: {name: _render(text, kind) for name, text in _RAW.items() if "{" in text} for kind in _TOKENS
}
