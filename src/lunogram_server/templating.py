"""Liquid templates (python-liquid), sandboxed and bounded, for journey webhooks and message templates.

Liquid evaluates no Python: templates see only the data handed to them (the user, organization, event, run
data). Every resource a template could make grow is capped: loop iterations, output size, nesting and local
variables, so a template from the console can neither hang a worker nor fill its memory.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from liquid import BoundTemplate, Environment
from liquid.exceptions import LiquidError

MAX_TEMPLATE_CHARS = 100_000
MAX_OUTPUT_CHARS = 1_000_000
MAX_LOOP_ITERATIONS = 10_000


class _Environment(Environment):
    loop_iteration_limit = MAX_LOOP_ITERATIONS
    output_stream_limit = MAX_OUTPUT_CHARS
    local_namespace_limit = 100_000
    context_depth_limit = 30
    block_nesting_limit = 30


ENVIRONMENT = _Environment(autoescape=False)


@dataclass
class TemplateError(ValueError):
    """A template that does not parse (line and column, 1-based) or fails to render."""

    message: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        return f"{self.message}{where}"


def _located(exc: LiquidError, source: str) -> TemplateError:
    token = getattr(exc, "token", None)
    index = getattr(token, "start_index", None)
    if index is None:
        return TemplateError(str(getattr(exc, "message", exc)))
    before = source[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return TemplateError(str(getattr(exc, "message", exc)), line, column)


@functools.lru_cache(maxsize=2048)
def compile_template(source: str) -> BoundTemplate:
    """A parsed template (cached: a journey's few templates are rendered for every run)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"longer than {MAX_TEMPLATE_CHARS} characters")
    try:
        return ENVIRONMENT.from_string(source)
    except LiquidError as exc:
        raise _located(exc, source) from None


def check_template(source: str) -> None:
    """Raises TemplateError with the line and column of the first syntax error."""
    compile_template(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    if "{" not in source:  # most headers and URLs hold no template at all
        return source
    try:
        return str(compile_template(source).render(**context))
    except LiquidError as exc:
        raise _located(exc, source) from None


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """A JSON value with every string in it rendered as a template."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    return []
