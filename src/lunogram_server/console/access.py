"""Which console role an admin API request needs, and the CSRF rule for requests made with a session.

A console session may call every `/api/admin/...` route; what it may do there depends on its role in the
session's current project:

- reads (GET, HEAD) and the POSTs that only compute something (template validation and preview, journey
  validation and dry run, a list rule's count) need **viewer**;
- what decides who and how messages are sent, API keys and console members (providers and their feedback
  URLs, subscription groups, sending rules, keys, console users) need **admin**;
- every other change needs **editor**.

Unsafe requests (anything but GET/HEAD/OPTIONS) made with a session must carry the session's CSRF token in
`X-CSRF-Token` (or, for the console's own HTML forms, a `csrf_token` field). Secret keys are not affected.
"""

from __future__ import annotations

import hmac
import re

from lunogram_server.console.accounts import RANK, Role

SESSION_COOKIE = "lunogram_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_READ_ONLY_POSTS = re.compile(
    r"^/api/admin/(templates/validate|templates/[^/]+/preview|journeys/[^/]+/validate|journeys/[^/]+/simulate"
    r"|lists/preview|users/search|organizations/search)$"
)
_ADMIN = re.compile(r"^/api/admin/(providers|subscription-groups|messaging/settings|keys|console-users)(/|$)")
_ADMIN_READS = re.compile(r"^/api/admin/providers/[^/]+/feedback-url$")


def required_role(method: str, path: str) -> Role:
    """The least role a console session needs for `method path` under /api/admin."""
    if method in SAFE_METHODS:
        return "admin" if _ADMIN_READS.match(path) else "viewer"
    if method == "POST" and _READ_ONLY_POSTS.match(path):
        return "viewer"
    if _ADMIN.match(path):
        return "admin"
    return "editor"


def allowed(role: Role | None, needed: Role) -> bool:
    return role is not None and RANK[role] >= RANK[needed]


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
