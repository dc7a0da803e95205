"""Journeys end to end, through the HTTP API only: the Client API in, the admin API to read.

The server runs its real event workers and journey runners; webhooks go to a real HTTP server on loopback
(allowed explicitly: by default a journey may not call the server's own networks).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from helpers import Server, ident, uid, wait_until
from journey_helpers import (
    Receiver,
    advance_at,
    entrance,
    fire_schedules_at,
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


# -- entrances -------------------------------------------------------------------------------------------------


def test_an_organization_event_enters_each_member_with_the_organization(jc: httpx.Client) -> None:
    org, members = uid("org"), [uid("m"), uid("m"), uid("m")]
    assert (
        jc.post("/client/organizations", json={"identifier": [ident(org)], "data": {"tier": "gold"}}).status_code == 200
    )
    for member in members:
        body = {"organization": {"identifier": [ident(org)]}, "user": {"identifier": [ident(member)]}}
        assert jc.post("/client/organizations/users", json=body).status_code == 200
    rule = {"type": "context", "path": "organization.data.tier", "op": "equals", "value": "gold"}
    steps = {
        "start": entrance({"kind": "organization_event", "event": "renewed", "rule": rule}, "done"),
        "done": {"type": "exit"},
    }
    journey = make_journey(jc, steps)
    body = [{"name": "renewed", "identifier": [ident(org)], "data": {"seats": 3}}]
    assert jc.post("/client/organizations/events", json=body).status_code == 202
    for member in members:
        run = wait_for_run(jc, journey["id"], user_id(jc, member), "exited")
        detail = jc.get(f"/admin/journey-runs/{run['id']}").json()
        assert detail["context"]["organization"]["data"] == {"tier": "gold"}
        assert detail["context"]["event"]["data"] == {"seats": 3}


def test_list_entrances_on_entry_exit_and_for_current_members(jc: httpx.Client) -> None:
    static = jc.post("/admin/lists", json={"name": uid("l")}).json()
    early = uid("early")
    jc.post(f"/admin/lists/{static['id']}/members", json={"users": [[ident(early)]]}).raise_for_status()
    steps = {
        "joined": entrance({"kind": "list", "list_id": static["id"], "enter_current_members": True}, "done"),
        "left": entrance({"kind": "list", "list_id": static["id"], "on": "exited"}, "bye"),
        "done": {"type": "exit"},
        "bye": {"type": "exit"},
    }
    journey = make_journey(jc, steps, reentry="always")
    # members before publishing enter through the backfill
    backfilled = wait_for_run(jc, journey["id"], user_id(jc, early), "exited")
    assert path(backfilled)[0] == ("joined", "entered")
    late = uid("late")
    jc.post(f"/admin/lists/{static['id']}/members", json={"users": [[ident(late)]]}).raise_for_status()
    late_id = user_id(jc, late)
    assert path(wait_for_run(jc, journey["id"], late_id, "exited"))[0] == ("joined", "entered")
    jc.request("DELETE", f"/admin/lists/{static['id']}/members", json={"users": [[ident(late)]]}).raise_for_status()
    wait_until(lambda: len(run_in(jc, journey["id"], late_id)) == 2, what="the exit entrance")
    assert path(run_in(jc, journey["id"], late_id)[0])[0] == ("left", "entered")


def test_a_rule_list_entry_enters(jc: httpx.Client) -> None:
    tag = uid("t")
    rule = {
        "type": "all",
        "rules": [
            {"type": "property", "path": "data.tag", "op": "equals", "value": tag},
            {"type": "property", "path": "data.vip", "op": "equals", "value": True},
        ],
    }
    ruled = jc.post("/admin/lists", json={"name": uid("r"), "rule": rule}).json()
    journey = make_journey(jc, {"start": entrance({"kind": "list", "list_id": ruled["id"]}, None)})
    who = uid("vip")
    jc.post("/client/users", json={"identifier": [ident(who)], "data": {"tag": tag, "vip": True}}).raise_for_status()
    run = wait_for_run(jc, journey["id"], user_id(jc, who), "completed")
    assert path(run) == [("start", "entered")]


def test_schedule_entrances_follow_upserts_deletes_and_occurrences(jserver: Server, jc: httpx.Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    name = uid("trial_end")
    steps = {
        "start": entrance({"kind": "schedule", "name": name, "offset": {"value": -1, "unit": "days"}}, "done"),
        "done": {"type": "exit"},
    }
    journey = make_journey(jc, steps, reentry="always")
    moved, cancelled = uid("moved"), uid("cancelled")
    for who in (moved, cancelled):
        body = {"name": name, "identifier": [ident(who)], "scheduled_at": (now + timedelta(days=3)).isoformat()}
        assert jc.post("/client/users/scheduled", json=body).status_code == 202
    # moved: the trial now ends in 6 days, so the entrance is due in 5, not 2
    body = {"name": name, "identifier": [ident(moved)], "scheduled_at": (now + timedelta(days=6)).isoformat()}
    assert jc.post("/client/users/scheduled", json=body).status_code == 202
    gone = jc.request("DELETE", "/client/users/scheduled", json={"name": name, "identifier": [ident(cancelled)]})
    assert gone.status_code == 200
    moved_id, cancelled_id = user_id(jc, moved), user_id(jc, cancelled)
    advance_at(jserver, now + timedelta(days=2, minutes=1))
    assert run_in(jc, journey["id"], moved_id) == []
    advance_at(jserver, now + timedelta(days=5, minutes=1))
    run = wait_for_run(jc, journey["id"], moved_id, "exited")
    assert run["entered_at"] is not None
    advance_at(jserver, now + timedelta(days=30))
    assert run_in(jc, journey["id"], cancelled_id) == []
    assert len(run_in(jc, journey["id"], moved_id)) == 1


def test_a_recurring_schedule_enters_once_per_occurrence(jserver: Server, jc: httpx.Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    name = uid("weekly")
    journey = make_journey(jc, {"start": entrance({"kind": "schedule", "name": name}, None)}, reentry="always")
    who = uid("w")
    first = now + timedelta(hours=1)
    body = {"name": name, "identifier": [ident(who)], "start_at": first.isoformat(), "interval": "1 day"}
    assert jc.post("/client/users/scheduled", json=body).status_code == 202
    who_id = user_id(jc, who)
    for n in range(3):
        at = first + timedelta(days=n, minutes=1)
        advance_at(jserver, at)
        advance_at(jserver, at)  # again: an occurrence enters once
        assert len(run_in(jc, journey["id"], who_id)) == n + 1
        assert fire_schedules_at(jserver, at) >= 1  # the occurrence fires: the next one gets its entry


def test_the_api_entrance_is_idempotent_by_key(jc: httpx.Client) -> None:
    steps = {"api": entrance({"kind": "api"}, "done"), "done": {"type": "exit"}}
    journey = make_journey(jc, steps, reentry="always")
    who = uid("api")
    body = {"identifier": [ident(who)], "data": {"coupon": "X1"}, "key": uid("k")}
    first = jc.post(f"/admin/journeys/{journey['id']}/entrances", json=body)
    again = jc.post(f"/admin/journeys/{journey['id']}/entrances", json=body)
    assert first.status_code == again.status_code == 202, first.text
    assert first.json()["entered"] is True
    assert again.json()["entered"] is True
    assert first.json()["run_id"] == again.json()["run_id"]
    run = wait_for_run(jc, journey["id"], first.json()["user_id"], "exited")
    assert jc.get(f"/admin/journey-runs/{run['id']}").json()["context"]["data"] == {"coupon": "X1"}
    assert len(run_in(jc, journey["id"], first.json()["user_id"])) == 1
    other = jc.post(f"/admin/journeys/{journey['id']}/entrances", json={**body, "key": uid("k")})
    assert other.status_code == 202
    wait_until(lambda: len(run_in(jc, journey["id"], first.json()["user_id"])) == 2, what="a second run")


# -- re-entry ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "extra", "expected"),
    [
        ("once", {}, 1),
        ("one_at_a_time", {}, 1),
        ("always", {}, 3),
        ("cooldown", {"cooldown": {"value": 1, "unit": "hours"}}, 1),
    ],
)
def test_reentry_policies(jc: httpx.Client, policy: str, extra: dict[str, Any], expected: int) -> None:
    steps = {
        "start": entrance(on_event("ping"), "hold"),
        "hold": {"type": "wait_for_event", "event": "release", "timeout": {"value": 1, "unit": "hours"}, "next": None},
    }
    journey = make_journey(jc, steps, reentry=policy, **extra)
    who = uid(policy)
    send_event(jc, who, "ping")
    who_id = user_id(jc, who)
    wait_until(lambda: run_in(jc, journey["id"], who_id), what="first run")
    send_event(jc, who, "ping")
    send_event(jc, who, "ping")
    marker = uid("marker")  # events of one user are applied in order: once the marker ran, the pings did
    send_event(jc, who, marker)
    wait_until(lambda: any(e["name"] == marker for e in jc.get(f"/admin/users/{who_id}/events").json()["events"]))
    assert len(run_in(jc, journey["id"], who_id)) == expected
    if policy in ("once", "one_at_a_time"):
        send_event(jc, who, "release")  # the first run ends
        wait_until(lambda: run_in(jc, journey["id"], who_id)[0]["status"] == "completed", what="first run done")
        send_event(jc, who, "ping")
        marker = uid("marker")
        send_event(jc, who, marker)
        wait_until(lambda: any(e["name"] == marker for e in jc.get(f"/admin/users/{who_id}/events").json()["events"]))
        assert len(run_in(jc, journey["id"], who_id)) == (1 if policy == "once" else 2)


# -- steps ---------------------------------------------------------------------------------------------------


def run_detail(jc: httpx.Client, run: dict[str, Any]) -> dict[str, Any]:
    response = jc.get(f"/admin/journey-runs/{run['id']}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def waiting_run(jc: httpx.Client, journey_id: str, who_id: str) -> dict[str, Any]:
    return run_detail(jc, wait_for_run(jc, journey_id, who_id, "waiting"))


def test_delays_by_duration_time_of_day_and_date(jserver: Server, jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("d"), "pause"),
        "pause": {"type": "delay", "duration": {"value": 2, "unit": "days"}, "next": "morning"},
        "morning": {"type": "delay", "mode": "time_of_day", "time": "09:00", "weekdays": ["mon"], "next": "renewal"},
        "renewal": {
            "type": "delay",
            "mode": "date",
            "path": "user.data.renews_at",
            "offset": {"value": -1, "unit": "days"},
            "next": None,
        },
    }
    journey = make_journey(jc, steps)
    who = uid("d")
    renews = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    body = {"identifier": [ident(who)], "timezone": "Asia/Tokyo", "data": {"renews_at": renews.isoformat()}}
    jc.post("/client/users", json=body).raise_for_status()
    send_event(jc, who, "d")
    who_id = user_id(jc, who)
    waiting = waiting_run(jc, journey["id"], who_id)
    entered = datetime.fromisoformat(waiting["entered_at"])
    due = datetime.fromisoformat(waiting["due_at"])
    assert timedelta(days=2) <= due - entered < timedelta(days=2, seconds=30)
    advance_at(jserver, due)
    waiting = waiting_run(jc, journey["id"], who_id)
    monday = datetime.fromisoformat(waiting["due_at"]).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (monday.weekday(), monday.hour, monday.minute) == (0, 9, 0)  # Monday 09:00 in the user's timezone
    assert timedelta(0) < monday - due <= timedelta(days=7)
    advance_at(jserver, monday)
    waiting = waiting_run(jc, journey["id"], who_id)
    assert datetime.fromisoformat(waiting["due_at"]) == renews - timedelta(days=1)
    advance_at(jserver, renews)
    done = wait_for_run(jc, journey["id"], who_id, "completed")
    assert [outcome for _, outcome in path(done)] == ["entered", "waited", "waited", "waited"]


def test_a_date_delay_already_past_is_skipped(jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("late"), "wait"),
        "wait": {"type": "delay", "mode": "date", "path": "event.data.when", "next": None},
    }
    journey = make_journey(jc, steps)
    who = uid("late")
    send_event(jc, who, "late", {"when": "2001-01-01T00:00:00Z"})
    run = wait_for_run(jc, journey["id"], user_id(jc, who), "completed")
    assert path(run) == [("start", "entered"), ("wait", "skipped")]


def test_an_experiment_chooses_by_weight_and_records_the_variant(jc: httpx.Client) -> None:
    steps = {
        "start": entrance({"kind": "api"}, "ab"),
        "ab": {
            "type": "experiment",
            "variants": [
                {"name": "a", "weight": 1, "next": "a"},
                {"name": "b", "weight": 1, "next": "b"},
                {"name": "never", "weight": 0, "next": "a"},
            ],
        },
        "a": {"type": "exit"},
        "b": {"type": "exit"},
    }
    journey = make_journey(jc, steps, reentry="always")
    who = uid("ab")
    chosen = []
    for _ in range(40):
        entered = jc.post(
            f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": uid("k")}
        ).json()
        chosen.append(entered["run_id"])
    runs = wait_until(
        lambda: (
            (r := run_in(jc, journey["id"], entered["user_id"]))
            and all(x["status"] == "exited" for x in r)
            and len(r) == 40
            and r
        )
    )
    variants = {step["outcome"] for run in runs for step in run["steps"] if step["step"] == "ab"}
    assert variants == {"variant:a", "variant:b"}
    for run in runs[:3]:
        detail = run_detail(jc, run)
        assert detail["context"]["variants"]["ab"] == path(run)[1][1].removeprefix("variant:")


@pytest.mark.parametrize("over", ["exit", "wait"])
def test_a_rate_limit_lets_n_through_per_period(jserver: Server, jc: httpx.Client, over: str) -> None:
    steps = {
        "start": entrance({"kind": "api"}, "limit"),
        "limit": {"type": "rate_limit", "limit": 2, "period": {"value": 1, "unit": "days"}, "over": over, "next": None},
    }
    journey = make_journey(jc, steps, reentry="always")
    users = [uid("rl") for _ in range(3)]
    ids = []
    for who in users:
        entered = jc.post(f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who})
        ids.append(entered.json()["user_id"])
    statuses = [wait_for_run(jc, journey["id"], i, ("completed", "exited", "waiting"))["status"] for i in ids]
    assert sorted(statuses) == sorted(["completed", "completed", "exited" if over == "exit" else "waiting"])
    if over == "wait":
        held = next(i for i, s in zip(ids, statuses, strict=True) if s == "waiting")
        detail = waiting_run(jc, journey["id"], held)
        advance_at(jserver, datetime.fromisoformat(detail["due_at"]) + timedelta(seconds=1))
        assert wait_for_run(jc, journey["id"], held, "completed")


def test_webhook_retries_5xx_and_429_then_takes_the_failure_path_on_4xx(jc: httpx.Client, hook: Receiver) -> None:
    hook.answers["/flaky"] = [500, 429]
    hook.answers["/broken"] = [400]
    steps = {
        "start": entrance({"kind": "api"}, "flaky"),
        "flaky": {"type": "webhook", "url": hook.url + "/flaky", "retries": 3, "next": "broken"},
        "broken": {"type": "webhook", "url": hook.url + "/broken", "next": "unreached", "failure_next": "fallback"},
        "unreached": {"type": "exit"},
        "fallback": {"type": "update_user", "data": {"fallback": True}, "next": None},
    }
    journey = make_journey(jc, steps)
    who = uid("wh")
    entered = jc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who}
    ).json()
    run = wait_for_run(jc, journey["id"], entered["user_id"], "completed")
    assert path(run) == [("start", "entered"), ("flaky", "status:200"), ("broken", "failed"), ("fallback", "updated")]
    assert run["steps"][1]["detail"]["attempt"] == 3
    assert run["steps"][2]["detail"]["status"] == 400
    assert len(hook.received("/flaky")) == 3
    assert len(set(hook.keys("/flaky"))) == 1  # one Idempotency-Key for every try of one step
    assert len(hook.received("/broken")) == 1  # a 4xx is not retried


def test_webhook_retries_run_out_and_the_run_fails_with_the_reason(jc: httpx.Client, hook: Receiver) -> None:
    hook.answers["/down"] = [503, 503, 503]
    steps = {
        "start": entrance({"kind": "api"}, "call"),
        "call": {"type": "webhook", "url": hook.url + "/down", "retries": 2, "next": None},
    }
    journey = make_journey(jc, steps)
    who = uid("down")
    entered = jc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who}
    ).json()
    run = wait_for_run(jc, journey["id"], entered["user_id"], "failed")
    assert run["error"] == "webhook: status 503"
    assert len(hook.received("/down")) == 3


def test_webhooks_may_not_call_private_networks(jc: httpx.Client) -> None:
    steps = {
        "start": entrance({"kind": "api"}, "call"),
        "call": {"type": "webhook", "url": "http://169.254.169.254/latest/meta-data", "next": None},
    }
    journey = make_journey(jc, steps)
    who = uid("ssrf")
    entered = jc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who}
    ).json()
    run = wait_for_run(jc, journey["id"], entered["user_id"], "failed")
    assert "may not call" in run["error"]
    assert run["steps"][-1]["detail"]["attempt"] == 1  # refused at once, never retried


def test_list_emit_enter_and_send_steps(jc: httpx.Client) -> None:
    static = jc.post("/admin/lists", json={"name": uid("l")}).json()
    target = make_journey(jc, {"in": entrance({"kind": "api"}, "done"), "done": {"type": "exit"}})
    emitted = uid("emitted")
    template_id = "7d0c5a52-4a9c-4d69-9c0e-5f3b1f0e2a11"
    steps = {
        "start": entrance({"kind": "api"}, "add"),
        "add": {"type": "add_to_list", "list_id": static["id"], "next": "emit"},
        "emit": {"type": "emit_event", "event": emitted, "data": {"from": "{{ run.journey_id }}"}, "next": "enter"},
        "enter": {"type": "enter_journey", "journey_id": target["id"], "next": "send"},
        "send": {"type": "send", "channel": "email", "template_id": template_id, "next": "remove"},
        "remove": {"type": "remove_from_list", "list_id": static["id"], "next": None},
    }
    journey = make_journey(jc, steps)
    who = uid("steps")
    entered = jc.post(
        f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who}
    ).json()
    who_id = entered["user_id"]
    run = wait_for_run(jc, journey["id"], who_id, "completed")
    assert [outcome for _, outcome in path(run)] == [
        "entered",
        "added",
        "emitted",
        "entered_journey",
        "queued",
        "removed",
    ]
    events = wait_until(
        lambda: [e for e in jc.get(f"/admin/users/{who_id}/events").json()["events"] if e["name"] == emitted]
    )
    assert events[0]["data"] == {"from": journey["id"]}
    assert wait_for_run(jc, target["id"], who_id, "exited")
    [message] = run_detail(jc, run)["messages"]
    assert (message["channel"], message["template_id"]) == ("email", template_id)
    # the run queued the message and went on; the sender then finds no such template: the message fails alone
    wait_until(lambda: run_detail(jc, run)["messages"][0]["status"] == "failed", what="the message failed")
    changes = jc.get(f"/admin/lists/{static['id']}").json()
    assert changes["member_count"] == 0


def test_goals_convert_a_run_from_any_step(jc: httpx.Client) -> None:
    static = jc.post("/admin/lists", json={"name": uid("l")}).json()
    steps = {
        "start": entrance({"kind": "api"}, "wait"),
        "wait": {"type": "delay", "duration": {"value": 7, "unit": "days"}, "next": None},
        "bought": {
            "type": "goal",
            "event": "purchase",
            "rule": {"type": "context", "path": "event.data.total", "op": "gte", "value": 1},
        },
        "joined": {"type": "goal", "list_id": static["id"]},
    }
    journey = make_journey(jc, steps)
    buyer, joiner = uid("buyer"), uid("joiner")
    ids = {}
    for who in (buyer, joiner):
        entered = jc.post(f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who})
        ids[who] = entered.json()["user_id"]
        wait_for_run(jc, journey["id"], ids[who], "waiting")
    send_event(jc, buyer, "purchase", {"total": 0})  # not the goal (rule)
    send_event(jc, buyer, "purchase", {"total": 20})
    jc.post(f"/admin/lists/{static['id']}/members", json={"users": [[ident(joiner)]]}).raise_for_status()
    assert path(wait_for_run(jc, journey["id"], ids[buyer], "converted"))[-1] == ("bought", "converted")
    assert path(wait_for_run(jc, journey["id"], ids[joiner], "converted"))[-1] == ("joined", "converted")
    stats = jc.get(f"/admin/journeys/{journey['id']}/stats").json()["1"]
    assert stats["entered"] == 2
    assert stats["ended"] == {"converted": 2}
    assert stats["through_step"]["bought"] == 1


# -- versions, lifecycle, merges and deletes -----------------------------------------------------------------


def test_runs_finish_on_their_version_unless_the_publish_moves_them(jc: httpx.Client) -> None:
    hold = {"type": "wait_for_event", "event": "go", "timeout": {"value": 1, "unit": "days"}}
    v1 = {"start": entrance({"kind": "api"}, "hold"), "hold": {**hold, "next": "a"}, "a": {"type": "exit"}}
    journey = make_journey(jc, v1, reentry="always")
    first, second, third = uid("v1"), uid("v1b"), uid("v2")

    def enter(who: str) -> str:
        entered = jc.post(f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(who)], "key": who})
        assert entered.status_code == 202, entered.text
        return str(entered.json()["user_id"])

    first_id, second_id = enter(first), enter(second)
    for who_id in (first_id, second_id):
        wait_for_run(jc, journey["id"], who_id, "waiting")
    v2 = {"start": entrance({"kind": "api"}, "hold"), "hold": {**hold, "next": "b"}, "b": {"type": "exit"}}
    assert jc.put(f"/admin/journeys/{journey['id']}/draft", json={"graph": {"steps": v2}}).status_code == 200
    published = jc.post(f"/admin/journeys/{journey['id']}/publish").json()
    assert published["live_version"] == 2
    third_id = enter(third)
    assert wait_for_run(jc, journey["id"], third_id, "waiting")["version"] == 2
    send_event(jc, first, "go")
    assert path(wait_for_run(jc, journey["id"], first_id, "exited"))[-1] == ("a", "exited")  # pinned to v1
    # v3 moves what waits at v2's (and v1's live successor's) hold to its own; v1's run stays on v1
    v3 = {"start": entrance({"kind": "api"}, "hold3"), "hold3": {**hold, "next": "c"}, "c": {"type": "exit"}}
    assert jc.put(f"/admin/journeys/{journey['id']}/draft", json={"graph": {"steps": v3}}).status_code == 200
    bad = jc.post(f"/admin/journeys/{journey['id']}/publish", json={"step_map": {"hold": "nowhere"}})
    assert bad.status_code == 400
    assert "step_map.hold" in bad.json()["detail"]
    moved = jc.post(f"/admin/journeys/{journey['id']}/publish", json={"step_map": {"hold": "hold3"}})
    assert moved.status_code == 200, moved.text
    send_event(jc, third, "go")
    send_event(jc, second, "go")
    assert path(wait_for_run(jc, journey["id"], third_id, "exited"))[-1] == ("c", "exited")
    assert path(wait_for_run(jc, journey["id"], second_id, "exited"))[-1] == ("a", "exited")


def test_each_version_can_be_read(jc: httpx.Client) -> None:
    v1 = {"start": entrance({"kind": "api"}, "a"), "a": {"type": "exit", "x": 10, "y": 20}}
    journey = make_journey(jc, v1)
    v2 = {"start": entrance({"kind": "api"}, "b"), "b": {"type": "exit"}}
    assert jc.put(f"/admin/journeys/{journey['id']}/draft", json={"graph": {"steps": v2}}).status_code == 200
    first = jc.get(f"/admin/journeys/{journey['id']}/versions/1")
    assert first.status_code == 200, first.text
    assert first.json()["graph"]["steps"]["a"] == {"type": "exit", "x": 10, "y": 20}
    assert first.json()["published_at"] is not None
    draft = jc.get(f"/admin/journeys/{journey['id']}/versions/2").json()
    assert set(draft["graph"]["steps"]) == {"start", "b"}
    assert draft["published_at"] is None
    missing = jc.get(f"/admin/journeys/{journey['id']}/versions/3")
    assert missing.status_code == 404
    assert "no version 3" in missing.json()["detail"]
    assert jc.get(f"/admin/journeys/{journey['id']}/versions/0").status_code == 400
    other = jc.get(f"/admin/journeys/{uuid.uuid4()}/versions/1")
    assert other.status_code == 404


def test_pause_resume_archive_and_duplicate(jserver: Server, jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("p"), "wait"),
        "wait": {"type": "delay", "duration": {"value": 1, "unit": "hours"}, "next": None},
    }
    journey = make_journey(jc, steps, reentry="always")
    who = uid("p")
    send_event(jc, who, "p")
    who_id = user_id(jc, who)
    waiting = waiting_run(jc, journey["id"], who_id)
    assert jc.post(f"/admin/journeys/{journey['id']}/pause").json()["status"] == "paused"
    send_event(jc, who, "p")  # not entered while paused
    advance_at(jserver, datetime.fromisoformat(waiting["due_at"]) + timedelta(minutes=1))
    assert [r["status"] for r in run_in(jc, journey["id"], who_id)] == ["waiting"]  # held
    assert jc.post(f"/admin/journeys/{journey['id']}/pause").status_code == 409
    assert jc.post(f"/admin/journeys/{journey['id']}/resume").json()["status"] == "live"
    advance_at(jserver, datetime.fromisoformat(waiting["due_at"]) + timedelta(minutes=1))
    assert [r["status"] for r in run_in(jc, journey["id"], who_id)] == ["completed"]
    copy = jc.post(f"/admin/journeys/{journey['id']}/duplicate")
    assert copy.status_code == 201
    assert copy.json()["status"] == "draft"
    assert copy.json()["draft_graph"]["steps"].keys() == steps.keys()
    send_event(jc, who, "p")
    wait_until(lambda: any(r["status"] == "waiting" for r in run_in(jc, journey["id"], who_id)))
    assert jc.post(f"/admin/journeys/{journey['id']}/archive").json()["status"] == "archived"
    assert {r["status"] for r in run_in(jc, journey["id"], who_id)} == {"completed", "cancelled"}
    assert jc.put(f"/admin/journeys/{journey['id']}/draft", json={"graph": {"steps": steps}}).status_code == 409


def test_a_merge_keeps_the_older_run_and_a_delete_ends_runs(jc: httpx.Client) -> None:
    steps = {
        "start": entrance(on_event("m"), "wait"),
        "wait": {"type": "delay", "duration": {"value": 1, "unit": "days"}, "next": None},
    }
    journey = make_journey(jc, steps)
    older, newer = uid("older"), uid("newer")
    send_event(jc, older, "m")
    older_id = user_id(jc, older)
    wait_for_run(jc, journey["id"], older_id, "waiting")
    send_event(jc, newer, "m")
    newer_id = user_id(jc, newer)
    wait_for_run(jc, journey["id"], newer_id, "waiting")
    merged = jc.post("/client/users", json={"identifier": [ident(older), ident(newer)]}).json()
    survivor = merged["id"]
    runs = run_in(jc, journey["id"], survivor)
    assert sorted(r["status"] for r in runs) == ["merged", "waiting"]
    kept = next(r for r in runs if r["status"] == "waiting")
    assert kept["entered_at"] == min(r["entered_at"] for r in runs)
    gone = jc.request("DELETE", "/client/users", json={"identifier": [ident(older)]})
    assert gone.status_code == 204
    detail = run_detail(jc, kept)
    assert detail["status"] == "deleted"
    assert detail["ended_at"] is not None


def test_deleting_runs_deletes_the_steps_they_took(jserver: Server, jc: httpx.Client) -> None:
    # Steps are not tied to their run by a foreign key (it cost the runner half of each batch's insert):
    # a statement trigger deletes them with their runs instead.
    import psycopg

    steps = {"api": entrance({"kind": "api"}, "done"), "done": {"type": "exit"}}
    journey = make_journey(jc, steps, reentry="always")
    entered = [
        jc.post(f"/admin/journeys/{journey['id']}/entrances", json={"identifier": [ident(uid("d"))], "key": uid("k")})
        for _ in "ab"
    ]
    assert all(e.status_code == 202 for e in entered), entered[0].text
    runs = [wait_for_run(jc, journey["id"], e.json()["user_id"], "exited") for e in entered]
    with psycopg.connect(jserver.database_url, autocommit=True) as conn:

        def taken(run_id: str) -> int:
            row = conn.execute("SELECT count(*) FROM journey_steps_taken WHERE run_id = %s", (run_id,)).fetchone()
            return row[0] if row else -1

        assert taken(runs[0]["id"]) == taken(runs[1]["id"]) == 2
        conn.execute("DELETE FROM journey_runs WHERE id = %s", (runs[0]["id"],))
        assert taken(runs[0]["id"]) == 0
        assert taken(runs[1]["id"]) == 2
