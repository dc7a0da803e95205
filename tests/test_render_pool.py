"""Rendering a large batch in child processes (messaging/render_pool.py) gives what rendering it in this
process gives, errors included, in the jobs' order; a child that dies costs the batch nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import wait_until
from lunogram_server.messaging.render_pool import Job, RenderPool, render_jobs
from lunogram_server.messaging.templates import (
    EmailContent,
    RenderError,
    TemplateDefinition,
    TextContent,
    UserContext,
    message_context,
)

EMAIL = TemplateDefinition(
    channel="email",
    variants={
        "en": EmailContent(
            subject="Hi {{ user.data.name }}",
            preheader="{{ user.data.points }} points",
            html="<html><head><style>p { color: #222 }</style></head><body><h1>Hi {{ user.data.name | upcase }}</h1>"
            "<p>{% if user.data.points > 100 %}Rich{% else %}Not yet{% endif %}</p>"
            "<a href='https://shop.example/x?u={{ user.id }}'>go</a></body></html>",
        ),
        "fr": EmailContent(subject="Salut {{ user.data.name }}", html="<p>Bonjour {{ user.data.name }}</p>"),
    },
    default_locale="en",
    id=uuid.uuid4(),
    updated_at=datetime.now(UTC),
)
# renders for most users; for a user whose `n` is 0 it divides by zero: a RenderError, not a failed batch
FRAGILE = TemplateDefinition(
    channel="sms",
    variants={"en": TextContent(body="{{ 100 | divided_by: user.data.n }} for {{ user.data.name }}")},
    default_locale="en",
    id=uuid.uuid4(),
    updated_at=datetime.now(UTC),
)


def job(template: TemplateDefinition, name: str, points: int, n: int, locale: str | None) -> Job:
    user = UserContext(
        id=uuid.uuid4(), email=f"{len(name)}@mail.example", locale=locale, data={"name": name, "points": points, "n": n}
    )
    return template, locale, message_context(user, unsubscribe_url="https://u.example/x"), {}


jobs = st.lists(
    st.builds(
        job,
        st.sampled_from([EMAIL, FRAGILE]),
        st.text(max_size=30),
        st.integers(-5, 500),
        st.integers(0, 3),
        st.sampled_from([None, "en", "fr-CA", "de"]),
    ),
    max_size=90,
)


def comparable(results: list[Any]) -> list[Any]:
    return [("error", str(r)) if isinstance(r, RenderError) else r for r in results]


@pytest.fixture(scope="module")
def pool() -> Iterator[RenderPool]:
    made = RenderPool(2, threshold=1)
    yield made
    made.close()


@settings(max_examples=15, deadline=None)
@given(batch=jobs)
def test_children_render_what_this_process_renders(pool: RenderPool, batch: list[Job]) -> None:
    assert comparable(asyncio.run(pool.render(batch))) == comparable(render_jobs(batch))


def test_errors_come_back_as_render_errors_naming_the_field(pool: RenderPool) -> None:
    batch = [job(FRAGILE, "ann", 1, 0, None), job(FRAGILE, "bob", 1, 4, None)]
    first, second = asyncio.run(pool.render(batch))
    assert isinstance(first, RenderError)
    assert first.problem.field == "variants.en.body"
    assert not isinstance(second, RenderError)
    assert second.as_dict()["body"] == "25 for bob"


def test_a_killed_child_costs_the_batch_nothing_and_the_next_batch_gets_a_new_pool() -> None:
    pool = RenderPool(1, threshold=1)
    try:
        batch = [job(EMAIL, f"user{n}", n, 1, "en") for n in range(40)]
        expected = comparable(render_jobs(batch))
        assert comparable(asyncio.run(pool.render(batch))) == expected
        executor = pool._executor
        assert executor is not None
        children = list(executor._processes)  # the pool's own record of its children
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        wait_until(lambda: _gone(children[0]), what="the child to be gone")
        assert comparable(asyncio.run(pool.render(batch))) == expected  # rendered in a thread
        assert comparable(asyncio.run(pool.render(batch))) == expected  # and in a new child again
        assert pool._executor is not None
        assert pool._executor is not executor
    finally:
        pool.close()


def test_small_batches_stay_in_this_process() -> None:
    pool = RenderPool(1, threshold=64)
    try:
        batch = [job(EMAIL, "ann", 5, 1, None)] * 63
        assert comparable(asyncio.run(pool.render(batch))) == comparable(render_jobs(batch))
        assert pool._executor is None  # no child was started
    finally:
        pool.close()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")  # a zombie: dead, not yet reaped
    except FileNotFoundError:
        return True


CHILD_OWNER = """
import asyncio, sys, uuid
from lunogram_server.messaging.render_pool import RenderPool
from lunogram_server.messaging.templates import TemplateDefinition, TextContent, UserContext, message_context

def main() -> None:
    template = TemplateDefinition(channel="sms", variants={"en": TextContent(body="hi {{ user.email }}")},
                                  default_locale="en")
    user = UserContext(id=uuid.uuid4(), email="a@mail.example")
    pool = RenderPool(1, threshold=1)
    asyncio.run(pool.render([(template, None, message_context(user), {})]))
    print(*pool._executor._processes, flush=True)
    sys.stdin.read()  # until killed

if __name__ == "__main__":
    main()
"""


def test_a_render_process_dies_with_its_parent(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(CHILD_OWNER)
    owner = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        assert not _gone(child)
    finally:
        owner.kill()
        owner.wait()
    wait_until(lambda: _gone(child), timeout=30, what="the render process to die with its parent")
