"""What a graph must be to be published, beyond its shape (models.py): every reference resolves, every loop
waits somewhere, rules and templates are valid. Problems name the step and the field."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from lunogram_server.journeys.models import (
    Condition,
    Delay,
    EmitEvent,
    EnterJourney,
    Entrance,
    EventTrigger,
    Experiment,
    Goal,
    Graph,
    ListStep,
    ListTrigger,
    OrganizationEventTrigger,
    RateLimit,
    Send,
    Split,
    Step,
    UpdateUser,
    WaitForEvent,
    Webhook,
)
from lunogram_server.journeys.rules import JourneyNode, Visited, check_rule
from lunogram_server.templating import TemplateError, check_template, strings_in


@dataclass(frozen=True)
class Problem:
    step: str | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"steps.{self.step}.{self.field}" if self.step else self.field
        return f"{where}: {self.message}"


def exits(step: Step) -> Iterator[tuple[str, str | None]]:
    """(field, next step key) of each way out of a step."""
    if isinstance(step, Condition):
        yield "then", step.then
        yield "else", step.otherwise
    elif isinstance(step, Split):
        for n, branch in enumerate(step.branches):
            yield f"branches[{n}].next", branch.next
        yield "default", step.default
    elif isinstance(step, Experiment):
        for n, variant in enumerate(step.variants):
            yield f"variants[{n}].next", variant.next
    elif isinstance(step, WaitForEvent):
        yield "next", step.next
        yield "timeout_next", step.timeout_next
    elif isinstance(step, Webhook):
        yield "next", step.next
        yield "failure_next", step.failure_next
    elif hasattr(step, "next"):
        yield "next", step.next


def rules_of(step: Step) -> Iterator[tuple[str, JourneyNode]]:
    if isinstance(step, Entrance) and isinstance(step.trigger, EventTrigger | OrganizationEventTrigger):
        if step.trigger.rule is not None:
            yield "trigger.rule", step.trigger.rule
    elif isinstance(step, Condition | WaitForEvent | Goal) and step.rule is not None:
        yield "rule", step.rule
    elif isinstance(step, Split):
        for n, branch in enumerate(step.branches):
            yield f"branches[{n}].rule", branch.rule


def _waits(step: Step) -> bool:
    """A step a run can stop at for a while: a loop through one cannot spin."""
    return isinstance(step, Delay | WaitForEvent | RateLimit | Webhook)


def check_graph(graph: Graph, journey_id: UUID | None = None) -> tuple[list[Problem], dict[str, list[UUID]]]:
    """Problems, and what the graph refers to outside itself: {"lists": [...], "static_lists": [...],
    "journeys": [...]} (the caller checks those exist in the project)."""
    problems: list[Problem] = []
    refs: dict[str, list[UUID]] = {"lists": [], "static_lists": [], "journeys": []}
    steps = graph.steps
    entrances = [key for key, step in steps.items() if isinstance(step, Entrance)]
    if not entrances:
        problems.append(Problem(None, "steps", "a journey needs at least one entrance step"))
    for key, step in steps.items():
        for field, target in exits(step):
            if target is None:
                continue
            if target not in steps:
                problems.append(Problem(key, field, f"no step {target!r} in this journey"))
            elif isinstance(steps[target], Entrance | Goal):
                problems.append(Problem(key, field, f"cannot lead to step {target!r}: it is a {steps[target].type}"))
        for field, rule in rules_of(step):
            try:
                refs["lists"] += check_rule(rule, field)
            except ValueError as exc:
                problems.append(Problem(key, field, str(exc).removeprefix(f"{field}: ").removeprefix(f"{field}")))
            for visited in _visited(rule):
                if visited.step not in steps:
                    problems.append(Problem(key, field, f"visited: no step {visited.step!r} in this journey"))
        if isinstance(step, Entrance) and isinstance(step.trigger, ListTrigger):
            refs["lists"].append(step.trigger.list_id)
        if isinstance(step, Goal) and step.list_id is not None:
            refs["lists"].append(step.list_id)
        if isinstance(step, ListStep):
            refs["static_lists"].append(step.list_id)
        if isinstance(step, EnterJourney):
            if step.journey_id == journey_id:
                problems.append(Problem(key, "journey_id", "a journey cannot enter its own runs into itself"))
            refs["journeys"].append(step.journey_id)
        problems += _template_problems(key, step)
    problems += _spinning_loops(graph)
    return problems, refs


def _visited(rule: Any) -> Iterator[Visited]:
    if isinstance(rule, Visited):
        yield rule
    for child in getattr(rule, "rules", ()):
        yield from _visited(child)


def _template_problems(key: str, step: Step) -> list[Problem]:
    fields: list[tuple[str, Any]] = []
    if isinstance(step, Webhook):
        fields = [("url", step.url), *((f"headers.{h}", v) for h, v in step.headers.items()), ("body", step.body)]
    elif isinstance(step, UpdateUser | EmitEvent | Send):
        fields = [("data", step.data)]
    found = []
    for field, value in fields:
        for text in strings_in(value):
            try:
                check_template(text)
            except TemplateError as exc:
                found.append(Problem(key, field, f"template: {exc}"))
                break
    return found


def _spinning_loops(graph: Graph) -> list[Problem]:
    """A cycle with no step that waits would move a run round it forever in one go: refused."""
    steps = graph.steps
    edges = {
        key: [t for _, t in exits(step) if t is not None and t in steps and not _waits(steps[t])]
        for key, step in steps.items()
        if not _waits(step)
    }
    state: dict[str, int] = {}  # 1: on the path, 2: done
    found: list[Problem] = []

    def visit(node: str) -> None:
        state[node] = 1
        for target in edges.get(node, []):
            if state.get(target) == 1:
                found.append(Problem(node, "next", f"loops back to {target!r} without a delay or wait on the way"))
            elif target not in state and target in edges:
                visit(target)
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node)
    return found


def first_entrance(graph: Graph, kind: str | None = None) -> str | None:
    for key, step in graph.steps.items():
        if isinstance(step, Entrance) and (kind is None or step.trigger.kind == kind):
            return key
    return None


__all__ = ["Problem", "check_graph", "exits", "first_entrance", "rules_of"]
_ = (Delay, RateLimit, Send)  # referenced by isinstance checks above through _waits / _template_problems
