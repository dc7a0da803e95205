"""The channel interface every provider implements, and what they share.

A sender hands a provider a `Message` that is already rendered and gets an `Outcome` back. `send` never
raises for anything the network or the provider does: every such problem is an Outcome, mapped the same
way by every provider (`http_outcome`, `network_outcome`):

- 2xx: `sent`, with the provider's message id when it gives one;
- 408, 429, 5xx, timeouts and network errors: `retry`, with `retry_after` when the answer had Retry-After;
- any other 4xx: `failed` (permanent), with the provider's own error text;
- an address the provider says will never work (hard bounce, invalid or unregistered device token):
  `failed` with `permanent_address_problem`, so the caller can suppress the address or drop the device.
"""

from __future__ import annotations

import email.utils
import functools
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Annotated, Any, ClassVar, Literal, Protocol, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

Channel = Literal["email", "sms", "push", "webhook", "whatsapp"]
CHANNELS: tuple[Channel, ...] = get_args(Channel)
Status = Literal["sent", "retry", "failed"]
DeviceOs = Literal["web", "ios", "android"]

MAX_ERROR_TEXT = 1000  # characters of a provider's error text kept in an Outcome
MAX_RETRY_AFTER = 86_400.0  # a Retry-After further away than a day is read as a day


@dataclass(frozen=True)
class WebPushKeys:
    """A Web Push subscription's keys, base64url as the browser's `PushSubscription.toJSON()` gives them."""

    p256dh: str
    auth: str


@dataclass(frozen=True)
class Device:
    """A push target: `token` for ios (APNs) and android (FCM), `endpoint` and `keys` for web (Web Push).
    FCM also accepts web tokens."""

    os: DeviceOs
    token: str | None = None
    endpoint: str | None = None
    keys: WebPushKeys | None = None


@dataclass(frozen=True)
class Message:
    """One rendered message for one recipient.

    `id` is the outbox message id: providers use it as their idempotency key, Message-ID, apns-id or
    custom argument where they have one, so a message sent twice can be recognised as one.
    `to` is an email address, an E.164 phone number, a device token or a Web Push endpoint (for push,
    `device` carries the details). Fields a channel does not use are ignored.
    """

    id: str
    channel: Channel
    to: str
    # email
    from_address: str | None = None  # defaults to the provider's config `from_address`
    from_name: str | None = None
    reply_to: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    # email headers are sent as given (List-Unsubscribe, List-Unsubscribe-Post ...); webhook request headers
    headers: Mapping[str, str] = field(default_factory=dict)
    # sms and whatsapp text; the push notification's body
    body: str | None = None
    # push
    title: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    device: Device | None = None
    # push: the URL opened on click; webhook: the URL called (defaults to the provider's config `url`)
    url: str | None = None
    # webhook
    method: str = "POST"
    json_body: Any = None  # webhook: the JSON body; whatsapp: a message object (e.g. a template) instead of text


@dataclass(frozen=True)
class Outcome:
    status: Status
    provider_message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, from the provider's Retry-After
    permanent_address_problem: bool = False  # hard bounce, invalid token, unregistered device

    @classmethod
    def sent(cls, provider_message_id: str | None = None) -> Outcome:
        return cls("sent", provider_message_id=provider_message_id)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None) -> Outcome:
        return cls("retry", error=_clip(error), retry_after=retry_after)

    @classmethod
    def failed(cls, error: str, *, permanent_address_problem: bool = False) -> Outcome:
        return cls("failed", error=_clip(error), permanent_address_problem=permanent_address_problem)


class Provider(Protocol):
    """One configured provider. Instances are reusable and safe to share between tasks of one event loop;
    they keep connections and access tokens between sends. `aclose` releases them."""

    kind: str
    channel: Channel

    async def send(self, message: Message) -> Outcome: ...

    async def aclose(self) -> None: ...


class ProviderConfigError(ValueError):
    """A provider's settings are not usable; `str()` is `field: rule` (e.g. `config.host: is required`)."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def _http_url(value: str) -> str:
    try:
        urlsplit(value).port  # noqa: B018 - raises for a malformed host or port
        url = httpx.URL(value)
    except (httpx.InvalidURL, ValueError):
        raise ValueError("must be an http or https URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http or https URL with a host")
    return value


# a URL setting: checked when saved, so a send never meets one httpx cannot use
HttpUrl = Annotated[str, Field(max_length=2000), AfterValidator(_http_url)]


class ProviderConfig(BaseModel):
    """Non-secret settings every kind has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_seconds: float = Field(default=15.0, gt=0, le=120, description="each request's time limit")


class EmailConfig(ProviderConfig):
    """Defaults for the email kinds, used when a message leaves them out."""

    from_address: str | None = Field(default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    from_name: str | None = Field(default=None, max_length=255)
    reply_to: str | None = Field(default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


class NoSecrets(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def first_error(exc: ValidationError, prefix: str) -> ProviderConfigError:
    """pydantic's first error as `prefix.field: rule`."""
    error = exc.errors(include_url=False)[0]
    path = prefix
    for part in error.get("loc", ()):
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    kind = error["type"]
    if kind == "missing":
        rule = "is required"
    elif kind == "extra_forbidden":
        rule = "is not a known field"
    else:
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        rule = message[:1].lower() + message[1:]
    return ProviderConfigError(path, rule)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def status_of(code: int) -> Status:
    if 200 <= code < 300:
        return "sent"
    if code in (408, 429) or code >= 500:
        return "retry"
    return "failed"


def http_outcome(
    response: httpx.Response,
    error: str,
    *,
    provider_message_id: str | None = None,
    permanent_address_problem: bool = False,
) -> Outcome:
    """The Outcome an HTTP answer means; `error` is the provider's own text for a non-2xx answer."""
    status = status_of(response.status_code)
    if status == "sent":
        return Outcome.sent(provider_message_id)
    text = f"HTTP {response.status_code}: {error}" if error else f"HTTP {response.status_code}"
    if status == "retry":
        return Outcome.retry(text, parse_retry_after(response.headers.get("retry-after")))
    return Outcome.failed(text, permanent_address_problem=permanent_address_problem)


def network_outcome(exc: BaseException) -> Outcome:
    """A request that got no answer (connection refused or reset, DNS, TLS, timeout): try again later."""
    detail = str(exc).strip()
    return Outcome.retry(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one (for reading providers' answers)."""
    return value if isinstance(value, dict) else {}


def body_text(response: httpx.Response) -> str:
    return " ".join(response.text[:MAX_ERROR_TEXT].split())


def missing(message: Message, *names: str) -> Outcome | None:
    """A failed Outcome naming the first field the channel needs that the message leaves empty."""
    for name in names:
        if not getattr(message, name):
            return Outcome.failed(f"message.{name}: is required for {message.channel}")
    return None


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """httpx's default trust (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR), made once per process and
    shared: making one loads the CA bundle, ~65 ms of CPU that would otherwise stall the event loop at each
    provider built."""
    return httpx.create_ssl_context()


class HttpProvider:
    """A provider speaking HTTP: one httpx client (shared when given), the request timeout, and the one
    place network errors become Outcomes."""

    kind: str
    channel: Channel
    http2: ClassVar[bool] = False

    def __init__(self, timeout: float, http: httpx.AsyncClient | None, ssl_context: ssl.SSLContext | None) -> None:
        self.timeout = timeout
        self._own = http is None
        self.http = http or httpx.AsyncClient(
            verify=ssl_context if ssl_context is not None else default_ssl_context(),
            timeout=timeout,
            http2=self.http2,
            follow_redirects=False,
            headers={"User-Agent": "lunogram"},
        )

    async def request(
        self, method: str, url: str, *, on_error: Callable[[BaseException], Outcome] = network_outcome, **kwargs: Any
    ) -> httpx.Response | Outcome:
        """The response, or the Outcome of a request that got none."""
        try:
            return await self.http.request(method, url, timeout=self.timeout, **kwargs)
        except httpx.InvalidURL as exc:  # not an HTTPError, and no retry will make the URL valid
            return Outcome.failed(f"url: {exc}")
        except httpx.HTTPError as exc:
            return on_error(exc)

    async def aclose(self) -> None:
        if self._own:
            await self.http.aclose()
