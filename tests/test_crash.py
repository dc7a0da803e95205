"""The event pipeline survives `kill -9`: real `lunogram serve` processes killed at random points.

1. Continuous ingest (sender threads posting batches of identifier events, each event carrying a unique
   `data.seq`) while the server is SIGKILLed and restarted on the same database, again and again. Afterwards
   every 202-acknowledged event is in history exactly once, no event at all is in history twice, each event
   is on the profile it named, and each sender's acknowledged events reach each user's history in the order
   they were sent.
2. A `match` fan-out over thousands of users, delivered in small chunks, killed midway (and once more after
   the restart, when it is still running then): every matching user gets the event exactly once, nobody else
   gets it.

Only processes these tests start are killed (`Server.kill()`); each test has a database of its own. The
random kill points come from a seed shown in every failure; LUNOGRAM_CRASH_SEED=<seed> replays it.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from helpers import Server, loopback_client, wait_until

USERS = 30
SENDERS = 2
KILLS = 5
SEQ_SPACE = 10_000_000  # sender n numbers its events n * SEQ_SPACE + 0, 1, 2, ...

MATCHING = 5_000
NOT_MATCHING = 600
CHUNK = 500
MATCH = {"campaign": "spring", "tier": "gold"}


def _seed() -> int:
    return int(os.environ.get("LUNOGRAM_CRASH_SEED") or random.randrange(2**32))


def _connect(server: Server) -> psycopg.Connection[Any]:
    return psycopg.connect(server.database_url, autocommit=True)


def _one(conn: psycopg.Connection[Any], sql: str, params: Any = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return row[0]


def _pending(server: Server) -> int:
    """Inbox events still to be applied (parked dead letters do not count)."""
    with _connect(server) as conn:
        return int(_one(conn, "SELECT count(*) FROM event_inbox WHERE dead_at IS NULL"))


def _dead(server: Server) -> list[tuple[Any, ...]]:
    with _connect(server) as conn:
        return conn.execute(
            "SELECT id, name, attempts, last_error FROM event_inbox WHERE dead_at IS NOT NULL ORDER BY id"
        ).fetchall()


# -- 1. ingest under repeated kill -9 -----------------------------------------------------------------------


@dataclass
class Sender:
    """One client posting batches one after another; an event counts as acknowledged only on a 202."""

    number: int
    server: Server
    rng: random.Random
    stop: threading.Event
    next_seq: int = 0
    user_of: dict[int, int] = field(default_factory=dict)  # every seq sent -> the user it named
    acked: list[int] = field(default_factory=list)  # acknowledged seqs, in the order they were sent
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    transport_errors: int = 0
    failure: BaseException | None = None

    def run(self) -> None:
        try:
            with loopback_client(
                base_url=self.server.base_url,
                headers={"Authorization": f"Bearer {self.server.secret_key}"},
                timeout=10,
            ) as client:
                while not self.stop.is_set():
                    self._post_one(client)
        except BaseException as exc:  # re-raised by Load.finish in the test's thread
            self.failure = exc

    def _post_one(self, client: httpx.Client) -> None:
        batch = []
        for _ in range(self.rng.randint(20, 50)):
            seq = self.number * SEQ_SPACE + self.next_seq
            self.next_seq += 1
            user = self.rng.randrange(USERS)
            self.user_of[seq] = user
            batch.append(
                {
                    "name": "crash.tick",
                    "identifier": [{"external_id": f"crash_user_{user}"}],
                    "data": {"seq": seq, "sender": self.number},
                }
            )
        try:
            response = client.post("/client/users/events", json=batch)
        except httpx.TransportError:
            # refused while the server is down, or cut off by a kill: not acknowledged. It may or may not have
            # been stored; if it was, it must still reach history at most once.
            self.transport_errors += 1
            time.sleep(0.02)
            return
        self.statuses[response.status_code] += 1
        if response.status_code == 202:
            self.acked += [event["data"]["seq"] for event in batch]
        time.sleep(0.01)  # paced a little, so that the final drain stays short on 2 cores


class Load:
    """`SENDERS` sender threads over the same `USERS` users."""

    def __init__(self, server: Server, rng: random.Random) -> None:
        self.stop = threading.Event()
        self.senders = [Sender(n, server, random.Random(rng.random()), self.stop) for n in range(SENDERS)]
        self.threads = [threading.Thread(target=s.run, name=f"sender-{s.number}", daemon=True) for s in self.senders]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def acked(self) -> int:
        return sum(len(s.acked) for s in self.senders)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a sender did not stop"
        for sender in self.senders:
            if sender.failure is not None:
                raise sender.failure


def test_ingest_survives_repeated_kill_9(server_factory: Callable[..., Server]) -> None:
    seed = _seed()
    rng = random.Random(seed)
    server = server_factory(extra_env={"LUNOGRAM_WORKERS": "1"})
    load = Load(server, rng).start()
    lives: list[str] = []
    try:
        wait_until(lambda: load.acked() > 0, timeout=20, what="the first acknowledged batch")
        for _ in range(KILLS):
            acked_before = load.acked()
            time.sleep(rng.uniform(0.2, 1.5))  # a random point of this life, under load
            server.kill()
            lives.append(f"{load.acked() - acked_before} acked, {_pending(server)} pending at the kill")
            time.sleep(rng.uniform(0.0, 0.3))  # the senders meet a closed port for a while
            server.start()
            mark = load.acked()
            wait_until(lambda m=mark: load.acked() > m, timeout=20, what="acknowledgements after the restart")
        time.sleep(rng.uniform(0.2, 0.5))
    finally:
        load.finish()
    context = f"seed {seed}; lives: {lives}; server log {server.log_path}"

    wait_until(lambda: _pending(server) == 0, timeout=60, what="the inbox to drain")
    assert _dead(server) == [], context

    with _connect(server) as conn:
        history = conn.execute(
            "SELECT e.id, (e.data ->> 'seq')::bigint, y.external_id "
            "FROM user_events AS e JOIN user_identifiers AS y ON y.user_id = e.user_id ORDER BY e.id"
        ).fetchall()
        profiles = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM user_identifiers), "
            "(SELECT count(DISTINCT user_id) FROM user_identifiers)"
        ).fetchone()

    for sender in load.senders:
        assert set(sender.statuses) <= {202}, f"sender {sender.number}: {dict(sender.statuses)}; {context}"
    user_of = {seq: user for sender in load.senders for seq, user in sender.user_of.items()}
    acked = {seq for sender in load.senders for seq in sender.acked}
    counts = collections.Counter(seq for _, seq, _ in history)
    duplicates = sorted(seq for seq, n in counts.items() if n > 1)
    missing = sorted(acked - counts.keys())
    unknown = sorted(counts.keys() - user_of.keys())
    assert duplicates == [], f"{len(duplicates)} events in history twice or more: {duplicates[:20]}; {context}"
    assert missing == [], f"{len(missing)} acknowledged events not in history: {missing[:20]}; {context}"
    assert unknown == [], f"history holds events nobody sent: {unknown[:20]}; {context}"
    errors = sum(s.transport_errors for s in load.senders)
    print(f"ingest: {len(acked)} acked, {len(counts)} in history, {errors} refused or cut requests; {context}")
    assert len(acked) >= 1000, f"too little load to prove anything ({len(acked)} acknowledged); {context}"

    # one profile per identifier whatever the kills did to its creation, and each event on the profile it named
    assert profiles == (USERS, USERS, USERS), context
    wrong = [(seq, ext) for _, seq, ext in history if ext != f"crash_user_{user_of[seq]}"]
    assert wrong == [], f"events on the wrong profile: {wrong[:20]}; {context}"

    # per user and sender, history order (user_events.id) is send order for the acknowledged events
    position = {seq: (s.number, i) for s in load.senders for i, seq in enumerate(s.acked)}
    last: dict[tuple[str, int], tuple[int, int]] = {}
    out_of_order = []
    for history_id, seq, ext in history:
        if seq not in position:
            continue
        number, sent_at = position[seq]
        previous = last.get((ext, number))
        if previous is not None and previous[1] > sent_at:
            out_of_order.append({"user": ext, "earlier": previous, "later": (history_id, sent_at)})
        last[(ext, number)] = (history_id, sent_at)
    assert out_of_order == [], f"history out of send order (history id, position): {out_of_order[:10]}; {context}"

    # the workers' counters (/metrics) count each applied event once, across every killed life
    with psycopg.connect(server.database_url) as conn:
        row = conn.execute("SELECT coalesce(sum(processed), 0), coalesce(sum(delivered), 0) FROM event_worker_stats")
        processed, delivered = row.fetchone() or (0, 0)
    assert (processed, delivered) == (len(history), len(history)), context


# -- 2. a match fan-out killed midway -----------------------------------------------------------------------

_SETUP = """
WITH made AS (
    INSERT INTO users (project_id, data)
    SELECT %(project)s,
           CASE WHEN g <= %(matching)s THEN jsonb_build_object('campaign', 'spring', 'tier', 'gold', 'n', g)
                WHEN mod(g, 2) = 0 THEN jsonb_build_object('campaign', 'spring', 'tier', 'silver', 'n', g)
                ELSE jsonb_build_object('campaign', 'autumn', 'tier', 'gold', 'n', g) END
    FROM generate_series(1, %(total)s) AS g
    RETURNING id, data
)
INSERT INTO user_identifiers (project_id, user_id, source, external_id)
SELECT %(project)s, id, 'default', 'fan_' || (data ->> 'n') FROM made
"""


def _delivered(conn: psycopg.Connection[Any], name: str) -> int:
    return int(_one(conn, "SELECT count(*) FROM user_events WHERE name = %s", (name,)))


def _kill_once_delivering(server: Server, conn: psycopg.Connection[Any], name: str, beyond: int) -> int | None:
    """Poll fast; SIGKILL the server as soon as more than `beyond` targets have the event, unless all do by
    then. Returns the count right after the kill, or None when the fan-out completed before we could kill."""
    deadline = time.monotonic() + 60
    while True:
        n = _delivered(conn, name)
        if n >= MATCHING:
            return None
        if n > beyond:
            server.kill()
            return _delivered(conn, name)
        assert time.monotonic() < deadline, f"fan-out stuck at {n} of {MATCHING}; server log {server.log_path}"
        time.sleep(0.002)


def _start_expecting_a_kill(server: Server, errors: list[BaseException]) -> None:
    try:
        server.start()
    except AssertionError as exc:  # "server exited": fine if it is the test's own SIGKILL, during the start
        if server.process is None or server.process.poll() != -signal.SIGKILL:
            errors.append(exc)
    except BaseException as exc:
        errors.append(exc)


def test_match_fanout_killed_midway(server_factory: Callable[..., Server]) -> None:
    env = {"LUNOGRAM_WORKERS": "1", "LUNOGRAM_BROADCAST_CHUNK": str(CHUNK)}
    server = server_factory(extra_env=env)
    name = "crash.fanout"
    with _connect(server) as conn:
        project = _one(conn, "SELECT id FROM projects WHERE name = 'default'")
        conn.execute(_SETUP, {"project": project, "matching": MATCHING, "total": MATCHING + NOT_MATCHING})

        with server.client() as client:
            response = client.post("/client/users/events", json=[{"name": name, "match": MATCH, "data": {"k": 1}}])
        assert response.status_code == 202, response.text

        # first kill: while the first life is fanning out
        first = _kill_once_delivering(server, conn, name, beyond=0)
        assert first is not None, "the fan-out completed before the kill: make it larger or the chunks smaller"
        assert 0 < first < MATCHING
        inbox = conn.execute("SELECT dead_at, attempts FROM event_inbox WHERE match IS NOT NULL").fetchall()
        assert inbox == [(None, 0)], "the half-done broadcast must wait in the inbox, untouched by the kill"

        # second kill: while the next life resumes it, if it has not finished by the time we see it move
        errors: list[BaseException] = []
        starter = threading.Thread(target=_start_expecting_a_kill, args=(server, errors), daemon=True)
        starter.start()
        second = _kill_once_delivering(server, conn, name, beyond=first)
        starter.join(timeout=90)
        assert not starter.is_alive()
        assert errors == []
        if second is not None:
            assert first < second < MATCHING
            server.start()
        elif server.process is not None and server.process.poll() is not None:
            server.start()

        wait_until(lambda: _pending(server) == 0, timeout=60, what="the fan-out to finish")
        assert _dead(server) == []
        got = conn.execute(
            "SELECT user_id, count(*), min(inbox_id), max(inbox_id) FROM user_events WHERE name = %s GROUP BY user_id",
            (name,),
        ).fetchall()
        matching = {row[0] for row in conn.execute("SELECT id FROM users WHERE data @> %s", (Jsonb(MATCH),))}
        everyone = int(_one(conn, "SELECT count(*) FROM users"))

    print(f"fan-out: killed at {first} and {second} of {MATCHING} delivered")
    assert len(matching) == MATCHING
    assert everyone == MATCHING + NOT_MATCHING
    twice = [row for row in got if row[1] != 1]
    assert twice == [], f"{len(twice)} users got the event more than once (kills after {first}, {second})"
    assert len({row[2] for row in got} | {row[3] for row in got}) == 1, "one accepted event, one inbox id"
    receivers = {row[0] for row in got}
    assert len(receivers - matching) == 0, f"{len(receivers - matching)} non-matching users got the event"
    assert len(matching - receivers) == 0, f"{len(matching - receivers)} matching users never got it"
