"""Message templates: a sandboxed Liquid environment, per-channel content, validation and rendering.

The sender's whole surface is three names:

    message_context(user, organization=..., event=..., run=..., unsubscribe_url=..., preferences_url=...,
                    data=...) -> dict                     # the variables every template sees
    render(template, locale, context, snippets) -> Rendered   # pure CPU: call it in a worker thread
    RenderError                                           # a template that cannot be rendered for this user

`render` reads nothing but its arguments (no database, no network, no clock besides Liquid's `'now'`), so
journeys, the transactional API, campaigns and the admin preview all produce the same message from the
same inputs. Parsed templates are cached by (template id, updated_at, locale); snippets by their source.

Liquid evaluates no Python: templates see only the context. Every resource a template can make grow is
capped (class attributes of `MessageEnvironment`): loop iterations, output size, local variables, nesting
and snippet depth, so a template from the console can neither hang a sender nor fill its memory.
"""

from __future__ import annotations

import functools
import html as html_lib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime
from io import StringIO
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Generic, Literal, TextIO, TypeVar
from uuid import UUID

import css_inline
import orjson
from liquid import BoundTemplate, Environment, RenderContext
from liquid.builtin.expressions import StringLiteral
from liquid.exceptions import (
    BlockNestingError,
    ContextDepthError,
    FilterValueError,
    LiquidError,
    LocalNamespaceLimitError,
    LoopIterationLimitError,
    OutputStreamLimitError,
    TemplateNotFoundError,
)
from liquid.loader import BaseLoader, TemplateSource
from liquid.output import LimitedStringIO
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Channel = Literal["email", "sms", "push", "inbox", "whatsapp", "webhook"]
CHANNELS: tuple[Channel, ...] = ("email", "sms", "push", "inbox", "whatsapp", "webhook")

# Caps (docs/messaging.md "Templates"; docs/api.md "Limits").
MAX_SOURCE_CHARS = 262_144  # a long field (HTML, text, bodies) or a snippet: 256 Ki characters of source
MAX_LINE_CHARS = 2_000  # a short field: subject, preheader, titles, URLs, header values
MAX_DATA_BYTES = 65_536  # push/inbox `data`, as JSON
MAX_VARIANTS = 50  # locales per template
MAX_HEADERS = 50  # webhook headers
MAX_OUTPUT_CHARS = 1_048_576  # what one field may render to
MAX_LOOP_ITERATIONS = 10_000  # per loop; nested loops multiply (a 100 x 100 nest is 10,000)
MAX_LOCALS_BYTES = 262_144  # assign/capture variables of one render (sys.getsizeof of the values)
MAX_BLOCK_NESTING = 30  # tags inside tags
MAX_SNIPPET_DEPTH = 5  # a snippet that renders a snippet that renders ...
MAX_RENDER_ITERATIONS = 50_000  # all loops of one field's render together (sequential loops add up)
MAX_FILTER_RESULT_CHARS = MAX_OUTPUT_CHARS  # one filter's result (`append`, `replace`, `join`, ...)
MAX_FILTER_RESULT_ITEMS = 100_000  # one filter's list result (`split`, `map`, `concat`, ...)
MAX_FILTERED_CHARS = 16 * MAX_OUTPUT_CHARS  # all filter results of one field's render together
MAX_SNIPPET_NAME = 100

SNIPPET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")
_NO_SNIPPETS: Mapping[str, str] = MappingProxyType({})
_SNIPPETS: ContextVar[Mapping[str, str]] = ContextVar("lunogram_snippets", default=_NO_SNIPPETS)
_SNIPPET_DEPTH: ContextVar[int] = ContextVar("lunogram_snippet_depth", default=0)


# --- a small thread-safe LRU ----------------------------------------------------------------------------------

K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """Bounded mapping, least recently used out first; safe to share between sender threads."""

    def __init__(self, capacity: int) -> None:
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._capacity = capacity

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


# --- the Liquid environment -------------------------------------------------------------------------------


class _OutputBuffer(LimitedStringIO):
    """The output limit counted in characters: Liquid's own buffer encodes every write to UTF-8 to count
    bytes, ~5% of a render (bench/templates.py)."""

    def write(self, text: str, /) -> int:
        self.size += len(text)
        if self.size > self.limit:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        return StringIO.write(self, text)


@dataclass(slots=True)
class _Budget:
    """What one field's render (with its snippets) has spent of the limits Liquid does not keep itself:
    Liquid caps each loop (nested ones multiplied) but not loops one after another, and caps output but
    not the values filters make on the way (`{{ x | append: x | append: x ... }}`)."""

    iterations: int = 0
    filtered: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("lunogram_render_budget", default=None)


class _TotalIterationsError(LoopIterationLimitError):
    pass


class MessageContext(RenderContext):
    """Counts every loop's iterations against the render's budget (Liquid checks each loop alone)."""

    __slots__ = ()

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        budget = _BUDGET.get()
        if budget is not None:
            budget.iterations += length
            if budget.iterations > MAX_RENDER_ITERATIONS:
                raise _TotalIterationsError("loop iteration limit reached", token=None)


def _bounded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A filter whose results are capped: each string or list, and all strings of a render together."""

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        if isinstance(result, str):
            size = len(result)
            if size > MAX_FILTER_RESULT_CHARS:
                raise FilterValueError(f"{name}: result longer than {MAX_FILTER_RESULT_CHARS:,} characters", token=None)
            budget = _BUDGET.get()
            if budget is not None and size > 64:
                budget.filtered += size
                if budget.filtered > MAX_FILTERED_CHARS:
                    message = f"{name}: filters made more than {MAX_FILTERED_CHARS:,} characters in all"
                    raise FilterValueError(message, token=None)
        elif isinstance(result, list | tuple) and len(result) > MAX_FILTER_RESULT_ITEMS:
            raise FilterValueError(f"{name}: result longer than {MAX_FILTER_RESULT_ITEMS:,} items", token=None)
        return result

    for flag in ("with_context", "with_environment"):
        if getattr(func, flag, False):
            setattr(bounded, flag, True)
    return bounded


class MessageTemplate(BoundTemplate):
    """Counts snippet nesting (render/include render a template with `partial=True`); a cheaper output
    buffer."""

    context_class = MessageContext

    def _get_buffer(self) -> StringIO:
        return _OutputBuffer(limit=MAX_OUTPUT_CHARS)

    def render_with_context(
        self,
        context: RenderContext,
        buffer: TextIO,
        *args: Any,
        partial: bool = False,
        block_scope: bool = False,
        **kwargs: Any,
    ) -> None:
        if not partial:
            super().render_with_context(context, buffer, *args, partial=partial, block_scope=block_scope, **kwargs)
            return
        depth = _SNIPPET_DEPTH.get()
        if depth >= MAX_SNIPPET_DEPTH:
            raise ContextDepthError(f"snippets nest deeper than {MAX_SNIPPET_DEPTH} levels", token=None)
        token = _SNIPPET_DEPTH.set(depth + 1)
        try:
            super().render_with_context(context, buffer, *args, partial=partial, block_scope=block_scope, **kwargs)
        finally:
            _SNIPPET_DEPTH.reset(token)


class SnippetLoader(BaseLoader):
    """`{% render 'footer' %}` and `{% include 'footer' %}`: the snippets handed to `render()` (a name ->
    source dict, held in a context variable for the duration of one render, so the loader never touches
    the database). Parsed snippets are cached by (environment, name, source): an edited snippet is a new
    key, never a stale hit."""

    def __init__(self, capacity: int = 1024) -> None:
        self._parsed: _Lru[tuple[bool, str, str], BoundTemplate] = _Lru(capacity)

    def get_source(
        self, env: Environment, template_name: str, *, context: RenderContext | None = None, **kwargs: object
    ) -> TemplateSource:
        source = _SNIPPETS.get().get(template_name)
        if source is None:
            raise TemplateNotFoundError(template_name, token=None)
        return TemplateSource(source, template_name, None)

    def load(
        self,
        env: Environment,
        name: str,
        *,
        globals: Mapping[str, object] | None = None,
        context: RenderContext | None = None,
        **kwargs: object,
    ) -> BoundTemplate:
        source = self.get_source(env, name).text
        key = (env.autoescape, name, source)
        parsed = self._parsed.get(key)
        if parsed is None:
            parsed = env.from_string(source, name=name, path=Path(name), globals=globals)
            self._parsed.put(key, parsed)
        return parsed


class MessageEnvironment(Environment):
    """Liquid for messages: strict (unknown tags and filters are errors), undefined variables render empty,
    and every resource a template can consume is capped."""

    loop_iteration_limit: ClassVar[int | None] = MAX_LOOP_ITERATIONS
    output_stream_limit: ClassVar[int | None] = MAX_OUTPUT_CHARS
    local_namespace_limit: ClassVar[int | None] = MAX_LOCALS_BYTES
    context_depth_limit: ClassVar[int] = 30
    block_nesting_limit: ClassVar[int] = MAX_BLOCK_NESTING
    max_source_chars: ClassVar[int] = MAX_SOURCE_CHARS
    template_class = MessageTemplate

    def __init__(self, *, autoescape: bool, loader: SnippetLoader) -> None:
        super().__init__(autoescape=autoescape, loader=loader)
        self.add_filter("json", _json_filter)
        for name, func in list(self.filters.items()):
            self.filters[name] = _bounded(name, func)

    def from_string(
        self,
        source: str,
        name: str = "",
        path: str | Path | None = None,
        globals: Mapping[str, object] | None = None,
        matter: Mapping[str, object] | None = None,
    ) -> BoundTemplate:
        if len(source) > self.max_source_chars:
            raise LiquidError(f"source longer than {self.max_source_chars} characters", token=None)
        return super().from_string(source, name=name, path=path, globals=globals, matter=matter)


def _json_filter(value: object) -> str:
    """`{{ user.data | json }}`: a value as JSON (for webhook bodies and data payloads)."""
    return orjson.dumps(value, default=str).decode()


_LOADER = SnippetLoader()
TEXT_ENV = MessageEnvironment(autoescape=False, loader=_LOADER)
# Email HTML escapes what it outputs (`{{ user.data.name }}` cannot inject markup); `| safe` opts out.
HTML_ENV = MessageEnvironment(autoescape=True, loader=_LOADER)


# --- content: what a template variant holds, per channel ----------------------------------------------------

Short = Annotated[str, StringConstraints(max_length=MAX_LINE_CHARS)]
Long = Annotated[str, StringConstraints(max_length=MAX_SOURCE_CHARS)]
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")]


class _Content(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _data_size(value: dict[str, Any]) -> dict[str, Any]:
    if len(orjson.dumps(value)) > MAX_DATA_BYTES:
        raise ValueError(f"is too large (at most {MAX_DATA_BYTES} bytes as JSON)")
    return value


class EmailContent(_Content):
    """`text` is derived from the rendered HTML when absent."""

    subject: Short = Field(min_length=1)
    preheader: Short = ""
    html: Long = Field(min_length=1)
    text: Long | None = None


class TextContent(_Content):
    """SMS and WhatsApp."""

    body: Long = Field(min_length=1)


class PushContent(_Content):
    """`data`: any JSON object; every string in it is a template."""

    title: Short = Field(min_length=1)
    body: Long = ""
    url: Short | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    _size = field_validator("data")(_data_size)


class InboxContent(_Content):
    title: Short = Field(min_length=1)
    body: Long = ""
    data: dict[str, Any] = Field(default_factory=dict)

    _size = field_validator("data")(_data_size)


class WebhookContent(_Content):
    """`url`, header values and `body` are templates; `method` is not."""

    url: Short = Field(min_length=1)
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[HeaderName, Short] = Field(default_factory=dict, max_length=MAX_HEADERS)
    body: Long | None = None


Content = EmailContent | TextContent | PushContent | InboxContent | WebhookContent
CONTENT: dict[str, type[_Content]] = {
    "email": EmailContent,
    "sms": TextContent,
    "whatsapp": TextContent,
    "push": PushContent,
    "inbox": InboxContent,
    "webhook": WebhookContent,
}


@dataclass(frozen=True, slots=True)
class TemplateDefinition:
    """A template as the renderer needs it. `variants` maps a BCP 47 locale to the channel's content
    (`CONTENT[channel]`); `default_locale` must be one of them. Saved templates carry `id` and
    `updated_at`, which key the parse cache; an unsaved one (id None) is parsed on each render."""

    channel: Channel
    variants: Mapping[str, Content]
    default_locale: str
    id: UUID | None = None
    updated_at: datetime | None = None
    name: str = ""
    subscription_group_id: UUID | None = None
    snippets: frozenset[str] = frozenset()  # names its variants render or include

    def __post_init__(self) -> None:
        expected = CONTENT[self.channel]
        variants: dict[str, Content] = {}
        for locale, content in self.variants.items():
            canonical = canonical_locale(locale)
            if canonical is None:
                raise ValueError(f"variants: {locale!r} is not a BCP 47 locale")
            if not isinstance(content, expected):
                raise ValueError(f"variants.{locale}: a {self.channel} template holds {expected.__name__}")
            variants[canonical] = content
        default = canonical_locale(self.default_locale)
        if default not in variants:
            raise ValueError(f"default_locale: {self.default_locale!r} is not one of the variants")
        object.__setattr__(self, "variants", variants)
        object.__setattr__(self, "default_locale", default)


# --- locales ------------------------------------------------------------------------------------------------

_LOCALE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8}){0,6}$")


def canonical_locale(value: str | None) -> str | None:
    """BCP 47 with the usual casing (`pt-br` -> `pt-BR`, `zh-hant-tw` -> `zh-Hant-TW`); POSIX forms are read
    too (`pt_BR.UTF-8` -> `pt-BR`). None for anything else."""
    if not value:
        return None
    tag = re.split(r"[.@]", value.strip(), maxsplit=1)[0].replace("_", "-")
    if len(tag) > 35 or not _LOCALE.match(tag):
        return None
    language, *rest = tag.split("-")
    parts = [language.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())
        else:
            parts.append(part.lower())
    return "-".join(parts)


def choose_locale(variants: Mapping[str, object], default_locale: str, wanted: str | None) -> str:
    """The variant for a user's locale: exact (`pt-BR`), then the language (`pt`), then another variant of
    the language (`pt-PT`, the first in order), then the template's default."""
    tag = canonical_locale(wanted)
    if tag is None:
        return default_locale
    if tag in variants:
        return tag
    language = tag.split("-", 1)[0]
    if language in variants:
        return language
    siblings = sorted(locale for locale in variants if locale.split("-", 1)[0] == language)
    return siblings[0] if siblings else default_locale


# --- context ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserContext:
    """The user a message goes to, as templates see it (`user.*`)."""

    id: UUID | str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    identifiers: Sequence[Mapping[str, Any]] = ()  # [{source, external_id}, ...] oldest first

    @classmethod
    def from_profile(cls, profile: Mapping[str, Any]) -> UserContext:
        """From a user as the admin API shows it (`lunogram_user_json`: identifiers under `identifier`)."""
        return cls(
            id=profile["id"],
            email=profile.get("email"),
            phone=profile.get("phone"),
            timezone=profile.get("timezone"),
            locale=profile.get("locale"),
            data=profile.get("data") or {},
            identifiers=[
                {"source": i["source"], "external_id": i["external_id"]} for i in profile.get("identifier") or ()
            ],
        )


def external_id_of(identifiers: Sequence[Mapping[str, Any]]) -> str | None:
    """The id a product knows the profile by: its `default` identifier, else the first that is not
    anonymous, else the first."""
    for identifier in identifiers:
        if identifier.get("source") == "default":
            return str(identifier["external_id"])
    for identifier in identifiers:
        if identifier.get("source") != "anonymous":
            return str(identifier["external_id"])
    return str(identifiers[0]["external_id"]) if identifiers else None


def message_context(
    user: UserContext,
    *,
    organization: Mapping[str, Any] | None = None,
    event: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    unsubscribe_url: str | None = None,
    preferences_url: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The variables of a message template; journeys, the transactional API, campaigns and the preview build
    it here so a template means the same everywhere.

    - `user`: id, email, phone, timezone, locale, data, external_id, identifiers ([{source, external_id}])
    - `organization`: the organization the message is about, as given (typically id, name, data), or nil
    - `event`: the event that entered the journey (name, data, ...) as given, or nil
    - `run`: the journey run's data, or nil
    - `unsubscribe_url`, `preferences_url`: strings made by the caller (signed links), or nil
    - `data`: data of this one send (the transactional API's `data`), {} when none
    """
    identifiers = [{"source": i["source"], "external_id": i["external_id"]} for i in user.identifiers]
    return {
        "user": {
            "id": str(user.id),
            "email": user.email,
            "phone": user.phone,
            "timezone": user.timezone,
            "locale": user.locale,
            "data": dict(user.data),
            "external_id": external_id_of(identifiers),
            "identifiers": identifiers,
        },
        "organization": dict(organization) if organization is not None else None,
        "event": dict(event) if event is not None else None,
        "run": dict(run) if run is not None else None,
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "data": dict(data) if data is not None else {},
    }


# --- validation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceProblem:
    """Why a field cannot be saved: `variants.en.html: line 3, column 7: expected '}}'`."""

    field: str
    message: str
    line: int | None = None
    column: int | None = None

    @property
    def rule(self) -> str:
        if self.line is None:
            return self.message
        return f"line {self.line}, column {self.column}: {self.message}"

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


@dataclass(frozen=True, slots=True)
class SnippetReference:
    """A `{% render 'name' %}` or `{% include 'name' %}` found in a field (1-based line and column)."""

    field: str
    name: str
    line: int
    column: int


@dataclass
class Checked:
    problems: list[SourceProblem] = field(default_factory=list)
    references: list[SnippetReference] = field(default_factory=list)

    @property
    def snippet_names(self) -> list[str]:
        return sorted({r.name for r in self.references})


def check_variants(channel: Channel, variants: Mapping[str, Content]) -> Checked:
    """Every field of every variant parsed as Liquid; the snippets they name (existence is the caller's
    check: it has the database)."""
    checked = Checked()
    for locale, content in variants.items():
        for path, source, is_html in _template_fields(channel, content):
            check_source(f"variants.{locale}.{path}", source, html=is_html, into=checked)
    return checked


def check_source(where: str, source: str, *, html: bool = False, into: Checked | None = None) -> Checked:
    """One field or snippet: syntax (the first error, located), unknown filters, snippet names."""
    checked = into if into is not None else Checked()
    if "{" not in source:
        return checked
    env = HTML_ENV if html else TEXT_ENV
    try:
        template = env.from_string(source)
    except LiquidError as exc:
        checked.problems.append(_problem(where, exc, source))
        return checked
    try:
        analysis = template.analyze(include_partials=False)
    except LiquidError as exc:
        checked.problems.append(_problem(where, exc, source))
        return checked
    for name, spans in analysis.filters.items():
        if name not in env.filters:
            line, column = _line_column(source, spans[0].index)
            checked.problems.append(SourceProblem(where, f"unknown filter '{name}'", line, column))
    static = RenderContext(template)
    stack = list(template.nodes)
    while stack:
        node = stack.pop()
        stack.extend(node.children(static, include_partials=False))
        if node.partial_scope() is None:
            continue
        target = getattr(node, "name", None)
        if isinstance(target, StringLiteral):
            line, column = _line_column(source, target.token.start_index)
            if not SNIPPET_NAME.match(target.value):
                checked.problems.append(SourceProblem(where, f"'{target.value}' is not a snippet name", line, column))
            else:
                checked.references.append(SnippetReference(where, target.value, line, column))
        else:
            line, column = _line_column(source, node.token.start_index)
            message = "a snippet is named by a quoted string ({% render 'footer' %})"
            checked.problems.append(SourceProblem(where, message, line, column))
    checked.references.sort(key=lambda r: (r.field, r.line, r.column))
    return checked


def _line_column(source: str, index: int) -> tuple[int, int]:
    """1-based; an index past the end (or unknown, -1) points just after the last character."""
    if index < 0 or index > len(source):
        index = len(source)
    line_start = source.rfind("\n", 0, index) + 1
    return source.count("\n", 0, index) + 1, index - line_start + 1


def _problem(where: str, exc: LiquidError, source: str) -> SourceProblem:
    token = exc.token
    message = _message(exc)
    if token is None:
        return SourceProblem(where, message)
    if token.source and token.source is not source and token.source != source:
        # raised inside a snippet: say which, located in the snippet's source
        snippet = exc.template_name or _snippet_named(token.source) or "?"
        line, column = _line_column(token.source, token.start_index)
        return SourceProblem(where, f"in snippet '{snippet}', line {line}, column {column}: {message}")
    line, column = _line_column(source, token.start_index)
    return SourceProblem(where, message, line, column)


def _snippet_named(source: str) -> str | None:
    return next((name for name, text in _SNIPPETS.get().items() if text == source), None)


def _message(exc: LiquidError) -> str:
    if isinstance(exc, _TotalIterationsError):
        return f"loop iteration limit reached (at most {MAX_RENDER_ITERATIONS:,} iterations of all loops together)"
    if isinstance(exc, LoopIterationLimitError):
        return f"loop iteration limit reached (at most {MAX_LOOP_ITERATIONS:,} iterations; nested loops multiply)"
    if isinstance(exc, BlockNestingError):
        return f"tags nest deeper than {MAX_BLOCK_NESTING} levels"
    if isinstance(exc, OutputStreamLimitError):
        return f"output longer than {MAX_OUTPUT_CHARS:,} characters"
    if isinstance(exc, LocalNamespaceLimitError):
        return f"assigned and captured variables larger than {MAX_LOCALS_BYTES:,} bytes"
    if isinstance(exc, TemplateNotFoundError):
        return f"snippet '{exc.message}' does not exist"
    return str(exc.message)


# --- rendering ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    locale: str
    subject: str
    preheader: str
    html: str  # CSS inlined, the preheader as the hidden first element of <body>
    text: str
    channel: Literal["email"] = "email"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RenderedText:
    """SMS and WhatsApp."""

    channel: Literal["sms", "whatsapp"]
    locale: str
    body: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RenderedPush:
    locale: str
    title: str
    body: str
    url: str | None
    data: dict[str, Any]
    channel: Literal["push"] = "push"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RenderedInbox:
    locale: str
    title: str
    body: str
    data: dict[str, Any]
    channel: Literal["inbox"] = "inbox"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RenderedWebhook:
    locale: str
    url: str
    method: str
    headers: dict[str, str]
    body: str | None
    channel: Literal["webhook"] = "webhook"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


Rendered = RenderedEmail | RenderedText | RenderedPush | RenderedInbox | RenderedWebhook


class RenderError(ValueError):
    """A template that cannot be rendered for this context: a limit reached, a missing snippet, a filter
    given a bad value, a webhook URL that renders to no URL. Permanent for this message (rendering again
    gives the same answer). `problem.field` is e.g. `variants.en.html`."""

    def __init__(self, problem: SourceProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def render(
    template: TemplateDefinition, locale: str | None, context: Mapping[str, Any], snippets: Mapping[str, str]
) -> Rendered:
    """The message `template` makes for `context` (see `message_context`) in the variant chosen for
    `locale` (`choose_locale`). `snippets` (name -> source) are those the template may render or include;
    pass at least `template.snippets` and what they include (templates_service.snippets_for).

    Pure and CPU-bound: run it in a worker thread, never on the event loop. Raises RenderError."""
    chosen = choose_locale(template.variants, template.default_locale, locale)
    compiled = _compiled(template, chosen)
    content = template.variants[chosen]
    token = _SNIPPETS.set(snippets)
    try:
        return _RENDERERS[template.channel](chosen, content, compiled, context)
    finally:
        _SNIPPETS.reset(token)


@dataclass(slots=True)
class _Compiled:
    """One variant's parsed fields: path -> template, or the source itself when it holds no Liquid."""

    fields: dict[str, BoundTemplate | str]
    sources: dict[str, str]
    prefix: str

    def render(self, path: str, context: Mapping[str, Any]) -> str:
        parsed = self.fields[path]
        if isinstance(parsed, str):
            return parsed
        try:
            token = _BUDGET.set(_Budget())
            try:
                return parsed.render(context)
            finally:
                _BUDGET.reset(token)
        except LiquidError as exc:
            raise RenderError(_problem(self.prefix + path, exc, self.sources[path])) from None
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            raise RenderError(SourceProblem(self.prefix + path, f"cannot be rendered: {exc}")) from None

    def render_json(self, path: str, value: Any, context: Mapping[str, Any]) -> Any:
        if isinstance(value, str):
            return self.render(path, context)
        if isinstance(value, dict):
            return {k: self.render_json(f"{path}.{k}", v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render_json(f"{path}[{n}]", v, context) for n, v in enumerate(value)]
        return value


# Parsed variants of saved templates: an edit changes updated_at, so a stale entry is never hit again.
_PARSED_CACHE: _Lru[tuple[UUID, datetime | None, str], _Compiled] = _Lru(512)


def _compiled(template: TemplateDefinition, locale: str) -> _Compiled:
    if template.id is None:
        return _compile(template.channel, locale, template.variants[locale])
    key = (template.id, template.updated_at, locale)
    found = _PARSED_CACHE.get(key)
    if found is None:
        found = _compile(template.channel, locale, template.variants[locale])
        _PARSED_CACHE.put(key, found)
    return found


def _compile(channel: Channel, locale: str, content: Content) -> _Compiled:
    prefix = f"variants.{locale}."
    compiled = _Compiled({}, {}, prefix)
    for path, source, is_html in _template_fields(channel, content):
        compiled.sources[path] = source
        if "{" not in source:
            compiled.fields[path] = source
            continue
        try:
            compiled.fields[path] = (HTML_ENV if is_html else TEXT_ENV).from_string(source)
        except LiquidError as exc:
            raise RenderError(_problem(prefix + path, exc, source)) from None
    return compiled


def _template_fields(channel: Channel, content: Content) -> Iterator[tuple[str, str, bool]]:
    """(path, source, is_html) of every templated field of a variant."""
    if isinstance(content, EmailContent):
        yield "subject", content.subject, False
        yield "preheader", content.preheader, False
        yield "html", content.html, True
        if content.text is not None:
            yield "text", content.text, False
    elif isinstance(content, TextContent):
        yield "body", content.body, False
    elif isinstance(content, PushContent | InboxContent):
        yield "title", content.title, False
        yield "body", content.body, False
        if isinstance(content, PushContent) and content.url is not None:
            yield "url", content.url, False
        yield from _json_strings("data", content.data)
    elif isinstance(content, WebhookContent):
        yield "url", content.url, False
        for name, value in content.headers.items():
            yield f"headers.{name}", value, False
        if content.body is not None:
            yield "body", content.body, False


def _json_strings(path: str, value: Any) -> Iterator[tuple[str, str, bool]]:
    if isinstance(value, str):
        yield path, value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _json_strings(f"{path}.{key}", item)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            yield from _json_strings(f"{path}[{n}]", item)


def _one_line(text: str) -> str:
    """Header-safe: no CR or LF survives (a subject cannot add headers), whitespace runs collapse."""
    return " ".join(text.split())


def _render_email(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    assert isinstance(content, EmailContent)
    body = c.render("html", context)
    text = c.render("text", context) if content.text is not None else html_to_text(body)
    preheader = _one_line(c.render("preheader", context))
    try:
        inlined = inline_css(body)
    except ValueError as exc:  # css_inline.InlineError
        raise RenderError(SourceProblem(c.prefix + "html", f"CSS cannot be inlined: {exc}")) from None
    return RenderedEmail(
        locale=locale,
        subject=_one_line(c.render("subject", context)),
        preheader=preheader,
        html=insert_preheader(inlined, preheader),
        text=text,
    )


def _render_sms(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    return RenderedText(channel="sms", locale=locale, body=c.render("body", context))


def _render_whatsapp(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    return RenderedText(channel="whatsapp", locale=locale, body=c.render("body", context))


def _render_push(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    assert isinstance(content, PushContent)
    url = c.render("url", context).strip() if content.url is not None else ""
    return RenderedPush(
        locale=locale,
        title=_one_line(c.render("title", context)),
        body=c.render("body", context),
        url=url or None,
        data=c.render_json("data", content.data, context),
    )


def _render_inbox(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    assert isinstance(content, InboxContent)
    return RenderedInbox(
        locale=locale,
        title=_one_line(c.render("title", context)),
        body=c.render("body", context),
        data=c.render_json("data", content.data, context),
    )


def _render_webhook(locale: str, content: Content, c: _Compiled, context: Mapping[str, Any]) -> Rendered:
    assert isinstance(content, WebhookContent)
    url = c.render("url", context).strip()
    if not re.match(r"^https?://[^\s/?#]+", url, re.IGNORECASE):
        raise RenderError(SourceProblem(c.prefix + "url", f"renders to {url[:200]!r}, not an http(s) URL"))
    headers = {name: _one_line(c.render(f"headers.{name}", context)) for name in content.headers}
    body = c.render("body", context) if content.body is not None else None
    return RenderedWebhook(locale=locale, url=url, method=content.method, headers=headers, body=body)


_RENDERERS: dict[str, Callable[[str, Content, _Compiled, Mapping[str, Any]], Rendered]] = {
    "email": _render_email,
    "sms": _render_sms,
    "whatsapp": _render_whatsapp,
    "push": _render_push,
    "inbox": _render_inbox,
    "webhook": _render_webhook,
}


# --- email HTML -----------------------------------------------------------------------------------------------

# Remote stylesheets are never fetched (a template must not make the sender reach the network); @media and
# other at-rules stay in a <style> block for the clients that honour them.
_INLINER = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
_HAS_CSS = re.compile(r"<(?:style|link)\b", re.IGNORECASE)
_BODY_OPEN = re.compile(r"<body\b[^<>]*>", re.IGNORECASE)
_PREHEADER_STYLE = (
    "display:none;font-size:1px;line-height:1px;max-height:0;max-width:0;opacity:0;overflow:hidden;mso-hide:all"
)


def inline_css(html: str) -> str:
    """<style> rules moved into style attributes (at-rules kept in <style>). HTML with no <style> or <link>
    is returned as is: there is nothing to inline, and parsing it would cost as much as the render."""
    if not _HAS_CSS.search(html):
        return html
    return str(_INLINER.inline(html))


def insert_preheader(html: str, preheader: str) -> str:
    """The preheader (the line inboxes show after the subject) as the hidden first element of <body>."""
    if not preheader:
        return html
    block = f'<div style="{_PREHEADER_STYLE}">{html_lib.escape(preheader, quote=False)}</div>'
    match = _BODY_OPEN.search(html)
    if match is None:
        return block + html
    return html[: match.end()] + block + html[match.end() :]


# Every pattern below runs in time linear in the HTML, whatever the HTML: no `.*?` or `[^>]*` that could
# rescan the rest of a document from each of thousands of unclosed `<a`, `<!--` or `<` (rendered HTML may be
# up to MAX_OUTPUT_CHARS, and a pattern that rescans is quadratic: minutes for one message).
_INVISIBLE = re.compile(r"<!--|<(head|style|script|title|template)\b", re.IGNORECASE)
_CLOSERS = {
    name: re.compile(rf"</{name}\s*>", re.IGNORECASE) for name in ("head", "style", "script", "title", "template")
}
_LINK = re.compile(
    r"""<a\b[^<>]*?\bhref\s*=\s*("[^"<>]*"|'[^'<>]*'|[^\s<>]+)[^<>]*>((?:[^<]|<(?!/?a\b))*?)</a\s*>""",
    re.IGNORECASE,
)
_BREAK = re.compile(r"<br\b[^<>]*>", re.IGNORECASE)
_ITEM = re.compile(r"<li\b[^<>]*>", re.IGNORECASE)
_CELL = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_PARAGRAPH = re.compile(r"</?(?:p|h[1-6]|blockquote|pre|table|ul|ol|hr)\b[^<>]*>", re.IGNORECASE)
_LINE = re.compile(r"</?(?:div|tr|section|article|header|footer|center)\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")
# block boundaries are marked (\x01 a line, \x02 a paragraph) so that nested blocks make one break, not many
_BOUNDARY = re.compile(r"[\x01\x02][\s\x01\x02]*")
_SPACES = re.compile(r"[ \t\r\f\v\xa0]+")
_BLANKS = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """A plain-text part from HTML: blocks become lines (paragraphs, headings, lists and tables blank-line
    separated), links `text (url)`, list items `- item`; head, style, script and comments dropped; entities
    decoded. Regular expressions rather than an HTML parser: the stdlib parser cost more than the Liquid
    render of the same email (bench/templates.py)."""
    text = _drop_invisible(html.replace("\x01", "").replace("\x02", ""))
    text = _LINK.sub(_link_text, text)
    text = _BREAK.sub("\n", text)
    text = _ITEM.sub("\x01- ", text)
    text = _CELL.sub(" ", text)
    text = _PARAGRAPH.sub("\x02", text)
    text = _LINE.sub("\x01", text)
    text = html_lib.unescape(_TAG.sub("", text))
    text = _BOUNDARY.sub(lambda m: "\n\n" if "\x02" in m.group() else "\n", text)
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


def _drop_invisible(html: str) -> str:
    """Without comments and head, style, script, title and template elements (an unclosed one runs to the end)."""
    found = _INVISIBLE.search(html)
    if found is None:
        return html
    kept: list[str] = []
    position = 0
    while found is not None:
        kept.append(html[position : found.start()])
        if found.group(1) is None:
            close = html.find("-->", found.end())
            position = len(html) if close < 0 else close + 3
        else:
            closing = _CLOSERS[found.group(1).lower()].search(html, found.end())
            position = len(html) if closing is None else closing.end()
        found = _INVISIBLE.search(html, position)
    kept.append(html[position:])
    return "".join(kept)


def _link_text(match: re.Match[str]) -> str:
    href = html_lib.unescape(match.group(1).strip("\"'")).strip()
    label = _TAG.sub("", match.group(2)).strip()
    plain = html_lib.unescape(label)
    if not href or href.startswith("#") or href == plain or href.removeprefix("mailto:") == plain:
        return label
    if not plain:
        return href
    return f"{label} ({html_lib.escape(href, quote=False)})"
