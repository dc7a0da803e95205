"""Official Python SDK for the Lunogram Client API.

    import lunogram

    with lunogram.Client("sk_...") as client:
        client.users.upsert("user_123", email="ada@example.com", data={"plan": "pro"})
        client.users.events.post([{"name": "order.completed", "identifier": "user_123", "data": {"total": 99}}])

`AsyncClient` has the same surface with awaitable methods. `Tracker` / `AsyncTracker` queue events and send
them in batches in the background.
"""

from ._base import DEFAULT_BASE_URL
from ._client import AsyncClient, Client
from ._errors import (
    APIError,
    ForbiddenError,
    LunogramError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    RequestError,
    UnauthorizedError,
    ValidationError,
)
from ._models import (
    NOT_GIVEN,
    DeviceOS,
    Event,
    ExternalID,
    IdentifierInput,
    IdentifierLike,
    InboxChannel,
    InboxCount,
    InboxMessage,
    InboxMessageCreate,
    InboxMessageList,
    InboxStatus,
    NotGiven,
    Organization,
    OrganizationEvent,
    ScheduledAccepted,
    SentMessage,
    User,
    VapidPublicKey,
    WebPushSubscription,
)
from ._tracker import AsyncTracker, Tracker
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "NOT_GIVEN",
    "APIError",
    "AsyncClient",
    "AsyncTracker",
    "Client",
    "DeviceOS",
    "Event",
    "ExternalID",
    "ForbiddenError",
    "IdentifierInput",
    "IdentifierLike",
    "InboxChannel",
    "InboxCount",
    "InboxMessage",
    "InboxMessageCreate",
    "InboxMessageList",
    "InboxStatus",
    "LunogramError",
    "NetworkError",
    "NotFoundError",
    "NotGiven",
    "Organization",
    "OrganizationEvent",
    "RateLimitError",
    "RequestError",
    "ScheduledAccepted",
    "SentMessage",
    "Tracker",
    "UnauthorizedError",
    "User",
    "ValidationError",
    "VapidPublicKey",
    "WebPushSubscription",
    "__version__",
]
