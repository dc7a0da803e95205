"""Identity resolution: identifiers -> one user or organization, creating and merging profiles as needed.

The resolution itself runs inside PostgreSQL (`sql/resolve.sql`, one template for both kinds) so that an
upsert is a single round trip and concurrent upserts serialise on advisory locks, not on luck.
"""

from lunogram_server.identity.models import (
    ANONYMOUS_SOURCE,
    DEFAULT_SOURCE,
    ExternalID,
    IdentifierRef,
    Identifiers,
    StrictModel,
    normalize,
)

__all__ = [
    "ANONYMOUS_SOURCE",
    "DEFAULT_SOURCE",
    "ExternalID",
    "IdentifierRef",
    "Identifiers",
    "StrictModel",
    "normalize",
]
