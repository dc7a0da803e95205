"""Idle workers are woken by arrivals (wakeups.py): with a 30 s poll, events are still applied at once."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from helpers import Server, ident, uid, wait_until


def test_an_arrival_wakes_idle_workers(server_factory: Callable[..., Server]) -> None:
    sleepy = server_factory(extra_env={"LUNOGRAM_EVENT_POLL_SECONDS": "30", "LUNOGRAM_SCHEDULER_POLL_SECONDS": "30"})
    count = "SELECT count(*) FROM user_events WHERE name = %s"
    with psycopg.connect(sleepy.database_url, autocommit=True) as db, sleepy.client() as client:
        for round_no in range(3):  # from the second on, the workers are idle when the event arrives
            name = uid(f"wake{round_no}")
            events = [{"name": name, "identifier": [ident(uid())]}]
            assert client.post("/client/users/events", json=events).status_code == 202
            wait_until(
                lambda name=name: db.execute(count, (name,)).fetchone() == (1,),
                timeout=10,
                what="an event applied long before the 30 s poll",
            )
