"""Journeys end to end, through the HTTP API only: the Client API in, the admin API to read.

The server runs its real event workers and journey runners; webhooks go to a real HTTP server on loopback
(allowed explicitly: by default a journey may not call the server's own networks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from helpers import Server, ident, uid, wait_until
from journey_helpers import (
    Receiver,
    entrance,
    make_journey,
    on_event,
    path,
    receiver,
    run_in,
    send_event,
    user_id,
    wait_for_run,
)


@pytest.fixture(scope="module")
def jserver(server_factory: Callable[..., Server]) -> Server:
    return server_factory(
        extra_env={
            "LUNOGRAM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
            "LUNOGRAM_WEBHOOK_RETRY_BASE_SECONDS": "0.05",
            "LUNOGRAM_JOURNEY_POLL_SECONDS": "0.2",
            "LUNOGRAM_LIST_POLL_SECONDS": "0.05",
        }
    )


@pytest.fixture
def jc(jserver: Server) -> Iterator[httpx.Client]:
    with jserver.client() as c:
        yield c


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as r:
        yield r


def test_an_event_enters_and_the_run_goes_through_condition_webhook_and_update(
    jc: httpx.Client, hook: Receiver
) -> None:
    steps = {
        "start": entrance(on_event("signup"), "is_pro"),
        "is_pro": {
            "type": "condition",
            "rule": {"type": "context", "path": "event.data.plan", "op": "equals", "value": "pro"},
            "then": "notify",
            "else": "done",
        },
        "notify": {
            "type": "webhook",
            "url": hook.url + "/welcome",
            "body": {"user": "{{ user.external_id }}", "plan": "{{ event.data.plan }}"},
            "save_as": "welcome",
            "next": "mark",
        },
        "mark": {"type": "update_user", "data": {"welcomed": "{{ run.data.welcome.body.ok }}"}, "next": "done"},
        "done": {"type": "exit"},
    }
    journey = make_journey(jc, steps)
    pro, free = uid("pro"), uid("free")
    send_event(jc, pro, "signup", {"plan": "pro"})
    send_event(jc, free, "signup", {"plan": "free"})
    pro_run = wait_for_run(jc, journey["id"], user_id(jc, pro), "exited")
    free_run = wait_for_run(jc, journey["id"], user_id(jc, free), "exited")
    assert path(pro_run) == [
        ("start", "entered"),
        ("is_pro", "yes"),
        ("notify", "status:200"),
        ("mark", "updated"),
        ("done", "exited"),
    ]
    assert path(free_run) == [("start", "entered"), ("is_pro", "no"), ("done", "exited")]
    [delivery] = hook.received("/welcome")
    assert delivery["body"] == {"user": pro, "plan": "pro"}
    assert delivery["headers"]["idempotency-key"] == f"{pro_run['id']}:2"
    profile = jc.get("/admin/users", params={"external_id": pro}).json()
    assert profile["data"]["welcomed"] == "true"


def test_bad_graphs_are_refused_naming_the_step_and_field(jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("x"), "nowhere"),
        "check": {"type": "condition", "rule": {"type": "property", "path": "nope", "op": "exists"}},
    }
    created = jc.post("/admin/journeys", json={"name": uid("j"), "graph": {"steps": steps}})
    assert created.status_code == 201, created.text
    problems = jc.post(f"/admin/journeys/{created.json()['id']}/validate").json()
    assert problems["valid"] is False
    found = {(p["step"], p["field"]) for p in problems["problems"]}
    assert ("start", "next") in found
    assert ("check", "rule") in found or ("check", "rule.path") in found, problems
    refused = jc.post(f"/admin/journeys/{created.json()['id']}/publish")
    assert refused.status_code == 400
    assert "steps.start.next: no step 'nowhere'" in refused.json()["detail"]
    shape = jc.post("/admin/journeys", json={"name": "x", "graph": {"steps": {"a": {"type": "teleport"}}}})
    assert shape.status_code == 400
    assert "graph.steps.a" in shape.json()["detail"]


def test_dry_run_agrees_with_a_real_run(jc: httpx.Client) -> None:
    tag = uid("sim")
    steps = {
        "start": entrance(on_event("visit"), "vip"),
        "vip": {
            "type": "split",
            "branches": [
                {
                    "name": "big",
                    "rule": {"type": "property", "path": "data.spend", "op": "gte", "value": 100},
                    "next": "big_wait",
                },
                {
                    "name": "tagged",
                    "rule": {"type": "property", "path": "data.tag", "op": "equals", "value": tag},
                    "next": "small",
                },
            ],
            "default": "done",
        },
        "big_wait": {"type": "delay", "duration": {"value": 0, "unit": "seconds"}, "next": "done"},
        "small": {"type": "update_user", "data": {"seen": True}, "next": "done"},
        "done": {"type": "exit"},
    }
    journey = make_journey(jc, steps)
    who = uid("u")
    assert (
        jc.post("/client/users", json={"identifier": [ident(who)], "data": {"tag": tag, "spend": 5}}).status_code == 200
    )
    simulated = jc.post(
        f"/admin/journeys/{journey['id']}/simulate",
        json={"identifier": [ident(who)], "event": {"name": "visit", "data": {}}},
    )
    assert simulated.status_code == 200, simulated.text
    before = jc.get("/admin/users", params={"external_id": who}).json()
    send_event(jc, who, "visit")
    real = wait_for_run(jc, journey["id"], before["id"], "exited")
    assert [s["step"] for s in simulated.json()["path"]] == [step for step, _ in path(real)]
    assert simulated.json()["path"][1]["outcome"] == "branch:tagged"
    # the dry run changed nothing: the update happened only in the real run
    assert "seen" not in before["data"]


def test_wait_for_event_and_its_timeout(jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("cart"), "wait"),
        "wait": {
            "type": "wait_for_event",
            "event": "purchase",
            "rule": {"type": "context", "path": "event.data.total", "op": "gt", "value": 10},
            "timeout": {"value": 1, "unit": "seconds"},
            "next": "thanks",
            "timeout_next": "remind",
        },
        "thanks": {"type": "exit"},
        "remind": {"type": "exit"},
    }
    journey = make_journey(jc, steps)
    buyer, idler = uid("buyer"), uid("idler")
    send_event(jc, buyer, "cart")
    send_event(jc, idler, "cart")
    buyer_id, idler_id = user_id(jc, buyer), user_id(jc, idler)
    wait_until(
        lambda: run_in(jc, journey["id"], buyer_id) and run_in(jc, journey["id"], buyer_id)[0]["status"] == "waiting"
    )
    send_event(jc, buyer, "purchase", {"total": 5})  # does not match the rule
    send_event(jc, buyer, "purchase", {"total": 50})
    bought = wait_for_run(jc, journey["id"], buyer_id, "exited")
    assert path(bought)[-2:] == [("wait", "received"), ("thanks", "exited")]
    timed_out = wait_for_run(jc, journey["id"], idler_id, "exited")
    assert path(timed_out)[-2:] == [("wait", "timed_out"), ("remind", "exited")]


def keep(_: Any) -> None:
    return None
