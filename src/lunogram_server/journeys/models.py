"""A journey's graph (the JSON operators save) and the admin API's request and response shapes.

A graph is `{"steps": {<key>: <step>, ...}}`: steps by key (1-64 letters, digits, `_` or `-`), each with a
`type` and, where the run goes on, the key of the next step (`next`; branching steps name one per branch).
A step with nowhere to go ends the run as completed. `x`/`y` place a step in the console's editor and mean
nothing to the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from lunogram_server.identity import Identifiers
from lunogram_server.journeys.rules import JourneyNode

StepKey = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
EventName = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Unit = Literal["seconds", "minutes", "hours", "days", "weeks"]
_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
MAX_STEPS = 200
MAX_SPAN_SECONDS = 10 * 365 * 86400  # ten years: no delay, timeout or offset is longer
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Duration(_Model):
    value: int = Field(ge=0, le=MAX_SPAN_SECONDS)
    unit: Unit

    @property
    def seconds(self) -> int:
        return self.value * _SECONDS[self.unit]

    @model_validator(mode="after")
    def _bounded(self) -> Duration:
        if self.seconds > MAX_SPAN_SECONDS:
            raise ValueError("value: at most ten years")
        return self


class Offset(_Model):
    """A signed span: negative is before, positive after."""

    value: int = Field(ge=-MAX_SPAN_SECONDS, le=MAX_SPAN_SECONDS)
    unit: Unit

    @property
    def seconds(self) -> int:
        return self.value * _SECONDS[self.unit]

    @model_validator(mode="after")
    def _bounded(self) -> Offset:
        if abs(self.seconds) > MAX_SPAN_SECONDS:
            raise ValueError("value: at most ten years either way")
        return self


class _Step(_Model):
    x: float | None = None
    y: float | None = None
    name: str | None = Field(default=None, max_length=255)  # a label for people


# -- entrances ---------------------------------------------------------------------------------------------


class EventTrigger(_Model):
    kind: Literal["event"]
    event: EventName
    rule: JourneyNode | None = None  # over the event (context `event.*`) and the user


class OrganizationEventTrigger(_Model):
    kind: Literal["organization_event"]
    event: EventName
    rule: JourneyNode | None = None  # over the event, the organization (`organization.*`) and each member


class ListTrigger(_Model):
    kind: Literal["list"]
    list_id: UUID
    on: Literal["entered", "exited"] = "entered"
    enter_current_members: bool = False  # on publish, the list's members enter too


class ScheduleTrigger(_Model):
    kind: Literal["schedule"]
    target: Literal["user", "organization"] = "user"
    name: EventName  # the scheduled resource's name
    offset: Offset = Offset(value=0, unit="seconds")


class ApiTrigger(_Model):
    kind: Literal["api"]


Trigger = Annotated[
    EventTrigger | OrganizationEventTrigger | ListTrigger | ScheduleTrigger | ApiTrigger, Field(discriminator="kind")
]


class Entrance(_Step):
    type: Literal["entrance"]
    trigger: Trigger
    next: StepKey | None = None


# -- flow ---------------------------------------------------------------------------------------------------


class Delay(_Step):
    """Wait a `duration`; or until a `time` of day (HH:MM in the user's timezone) on allowed `weekdays`; or
    until the date at `path` (user.data.*, organization.data.*, event.data.*, run.data.*) plus `offset`
    (skipped when already past)."""

    type: Literal["delay"]
    mode: Literal["duration", "time_of_day", "date"] = "duration"
    duration: Duration | None = None
    time: Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] | None = None
    weekdays: list[Weekday] | None = Field(default=None, min_length=1, max_length=7)
    path: str | None = Field(default=None, max_length=1100)
    offset: Offset | None = None
    next: StepKey | None = None

    @model_validator(mode="after")
    def _check(self) -> Delay:
        if self.mode == "duration" and self.duration is None:
            raise ValueError("duration: needed for mode 'duration'")
        if self.mode == "time_of_day" and self.time is None:
            raise ValueError("time: needed for mode 'time_of_day' (HH:MM)")
        if self.mode == "date":
            if self.path is None:
                raise ValueError("path: needed for mode 'date'")
            root = self.path.split(".", 1)[0]
            if root not in ("user", "organization", "event", "run") or ".data." not in f"{self.path}.":
                raise ValueError(
                    "path: must be user.data.<key>, organization.data.<key>, event.data.<key> or run.data.<key>"
                )
        return self


class WaitForEvent(_Step):
    """Wait for the user's event `event` (matching `rule`, over `event.*` and the user) after the run reached
    this step; `next` when it comes, `timeout_next` when `timeout` passes first."""

    type: Literal["wait_for_event"]
    event: EventName
    rule: JourneyNode | None = None
    timeout: Duration
    next: StepKey | None = None
    timeout_next: StepKey | None = None


class Condition(_Step):
    type: Literal["condition"]
    rule: JourneyNode
    then: StepKey | None = None
    otherwise: StepKey | None = Field(default=None, alias="else")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Branch(_Model):
    name: str | None = Field(default=None, max_length=255)
    rule: JourneyNode
    next: StepKey | None = None


class Split(_Step):
    """The first branch whose rule matches, else `default`."""

    type: Literal["split"]
    branches: list[Branch] = Field(min_length=1, max_length=20)
    default: StepKey | None = None


class Variant(_Model):
    name: str = Field(min_length=1, max_length=64)
    weight: int = Field(ge=0, le=10_000)
    next: StepKey | None = None


class Experiment(_Step):
    """A random branch by weight, the same for a run however often it is replayed; the variant is recorded."""

    type: Literal["experiment"]
    variants: list[Variant] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("variants: the weights must add up to more than 0")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError("variants: names must differ")
        return self


class RateLimit(_Step):
    """At most `limit` runs through per `period`; the others wait for the next period or exit (`over`)."""

    type: Literal["rate_limit"]
    limit: int = Field(ge=1, le=10_000_000)
    period: Duration
    over: Literal["wait", "exit"] = "wait"
    next: StepKey | None = None

    @model_validator(mode="after")
    def _check(self) -> RateLimit:
        if self.period.seconds < 1:
            raise ValueError("period: at least one second")
        return self


# -- actions ------------------------------------------------------------------------------------------------


Template = Annotated[str, StringConstraints(max_length=10_000)]


class Webhook(_Step):
    """Call `url` (Liquid templates over user, organization, event, run data) with `headers` and a JSON
    `body` whose strings are templates too. 2xx: `next`, the response (status and JSON body) stored at
    run.data.<save_as>. 5xx, 429 and network errors are retried with backoff up to `retries` times, then,
    like any other status, take `failure_next` (or fail the run)."""

    type: Literal["webhook"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: Template
    headers: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], Template] = Field(
        default_factory=dict, max_length=50
    )
    body: Any = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    retries: int = Field(default=3, ge=0, le=10)
    save_as: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")] | None = None
    next: StepKey | None = None
    failure_next: StepKey | None = None


class UpdateUser(_Step):
    """Merge `data` into the user's data (values may be templates), through the same upsert as the Client
    API: lists follow."""

    type: Literal["update_user"]
    data: dict[str, Any] = Field(min_length=1, max_length=100)
    next: StepKey | None = None


class ListStep(_Step):
    type: Literal["add_to_list", "remove_from_list"]
    list_id: UUID
    next: StepKey | None = None


class EmitEvent(_Step):
    """Post the user's event `event` with `data` (values may be templates) into the event pipeline."""

    type: Literal["emit_event"]
    event: EventName
    data: dict[str, Any] = Field(default_factory=dict, max_length=100)
    next: StepKey | None = None


class EnterJourney(_Step):
    type: Literal["enter_journey"]
    journey_id: UUID
    next: StepKey | None = None


class Send(_Step):
    """Send template `template_id` on `channel`: an outbox row written with the step (messaging sends it)."""

    type: Literal["send"]
    channel: Literal["email", "sms", "push", "webhook", "inbox", "whatsapp"]
    template_id: UUID
    data: dict[str, Any] = Field(default_factory=dict, max_length=100)
    next: StepKey | None = None


class Goal(_Step):
    """Not a step runs go through: while a run is on any step, the user's event `event` (matching `rule`), or
    entering list `list_id`, ends it as converted."""

    type: Literal["goal"]
    event: EventName | None = None
    rule: JourneyNode | None = None
    list_id: UUID | None = None

    @model_validator(mode="after")
    def _check(self) -> Goal:
        if (self.event is None) == (self.list_id is None):
            raise ValueError("goal: give exactly one of event or list_id")
        return self


class Exit(_Step):
    type: Literal["exit"]


Step = Annotated[
    Entrance
    | Delay
    | WaitForEvent
    | Condition
    | Split
    | Experiment
    | RateLimit
    | Webhook
    | UpdateUser
    | ListStep
    | EmitEvent
    | EnterJourney
    | Send
    | Goal
    | Exit,
    Field(discriminator="type"),
]


class Graph(_Model):
    steps: dict[StepKey, Step] = Field(min_length=1, max_length=MAX_STEPS)


# -- the admin API ------------------------------------------------------------------------------------------

Reentry = Literal["once", "one_at_a_time", "always", "cooldown"]


class JourneySettings(_Model):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    reentry: Reentry | None = None
    cooldown: Duration | None = None


class CreateJourney(JourneySettings):
    name: str = Field(min_length=1, max_length=255)
    graph: Graph


class SaveDraft(_Model):
    graph: Graph


class Publish(_Model):
    """`step_map`: runs on the live version's steps move to the new version's (old key -> new key); runs on
    steps not mapped finish on the version they entered."""

    step_map: dict[StepKey, StepKey] | None = Field(default=None, max_length=MAX_STEPS)


class ApiEntrance(_Model):
    """Enter one user (created if unknown, as every write) through the journey's API entrance."""

    identifier: Identifiers
    data: dict[str, Any] = Field(default_factory=dict)
    key: Annotated[str, StringConstraints(min_length=1, max_length=255)]  # entering twice with a key: once
    entrance: StepKey | None = None  # which API entrance, when the journey has several


class Simulate(_Model):
    """A dry run: the path `identifier`'s user would take now (or at `at`), entering with `event`."""

    identifier: Identifiers
    entrance: StepKey | None = None
    event: dict[str, Any] | None = None  # {name, data}: the entering event
    data: dict[str, Any] = Field(default_factory=dict)  # run data, as an API entrance gives it
    at: datetime | None = None


class ProblemItem(BaseModel):
    step: str | None
    field: str
    message: str


class Validation(BaseModel):
    valid: bool
    problems: list[ProblemItem]
