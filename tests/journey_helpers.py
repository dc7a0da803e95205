"""Helpers for journey tests: building graphs, publishing, waiting on runs, and a real HTTP receiver for
webhooks on loopback that counts deliveries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from helpers import free_port, ident, uid, wait_until


def entrance(trigger: dict[str, Any], next_step: str | None) -> dict[str, Any]:
    step: dict[str, Any] = {"type": "entrance", "trigger": trigger}
    if next_step is not None:
        step["next"] = next_step
    return step


def on_event(name: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "event", "event": name, **extra}


def make_journey(client: httpx.Client, steps: dict[str, Any], publish: bool = True, **settings: Any) -> dict[str, Any]:
    created = client.post("/admin/journeys", json={"name": uid("journey"), "graph": {"steps": steps}, **settings})
    assert created.status_code == 201, created.text
    journey = dict(created.json())
    if publish:
        published = client.post(f"/admin/journeys/{journey['id']}/publish")
        assert published.status_code == 200, published.text
        journey = dict(published.json())
    return journey


def send_event(client: httpx.Client, external_id: str, name: str, data: dict[str, Any] | None = None) -> None:
    body = [{"name": name, "identifier": [ident(external_id)], "data": data or {}}]
    response = client.post("/client/users/events", json=body)
    assert response.status_code == 202, response.text


def user_id(client: httpx.Client, external_id: str) -> str:
    def found() -> str | None:
        response = client.get("/admin/users", params={"external_id": external_id})
        return str(response.json()["id"]) if response.status_code == 200 else None

    return str(wait_until(found, what=f"user {external_id}"))


def runs_of(client: httpx.Client, user: str) -> list[dict[str, Any]]:
    response = client.get(f"/admin/users/{user}/journeys")
    assert response.status_code == 200, response.text
    return list(response.json())


def run_in(client: httpx.Client, journey_id: str, user: str) -> list[dict[str, Any]]:
    return [run for run in runs_of(client, user) if run["journey_id"] == journey_id]


def wait_for_run(
    client: httpx.Client, journey_id: str, user: str, status: str | tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    wanted = (status,) if isinstance(status, str) else status

    def done() -> dict[str, Any] | None:
        runs = run_in(client, journey_id, user)
        return runs[0] if runs and runs[0]["status"] in wanted else None

    return dict(wait_until(done, timeout=timeout, what=f"a run of {journey_id} {wanted}"))


def path(run: dict[str, Any]) -> list[tuple[str, str]]:
    return [(step["step"], step["outcome"]) for step in run["steps"]]


@dataclass
class Receiver:
    """A real HTTP server on loopback: records every request; `answers` decides the status per path."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)  # path -> statuses to give in turn (then 200)
    delay: float = 0.0  # seconds each answer takes (a slow receiver)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def keys(self, path: str) -> list[str]:
        return [r["headers"].get("idempotency-key", "") for r in self.received(path)]


@contextmanager
def receiver() -> Iterator[Receiver]:
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if len(raw) < length:  # the sender died mid-request (a kill -9 test): not a delivery
                return
            recv = state["r"]
            with recv.lock:
                body = json.loads(raw) if raw else None
                recv.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                queue = recv.answers.get(self.path.split("?")[0], [])
                status = queue.pop(0) if queue else 200
            if recv.delay:
                time.sleep(recv.delay)  # the receiver's own latency
            payload = json.dumps({"ok": status < 300, "echo": body}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    state["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        server.shutdown()
        server.server_close()


Check = Callable[[], Any]


def advance_at(server: Any, at: Any, rounds: int = 50) -> int:
    """Run an in-process runner whose clock reads `at` against the server's database until nothing is due
    at that time (schedule entrances, backfills, runs), webhook calls included; how many items it handled.
    The server's own runners keep real time, so they leave alone what only `at` makes due."""
    import asyncio

    from lunogram_server.config import JourneySettings
    from lunogram_server.db import open_pool
    from lunogram_server.journeys.runner import Runner

    async def go() -> int:
        pool = await open_pool(server.database_url, min_size=1, max_size=4)
        total = 0
        try:
            config = JourneySettings(webhook_allowed_networks="127.0.0.0/8", webhook_retry_base_seconds=0.01)
            runner = Runner(pool, config, clock=lambda: at)
            for _ in range(rounds):
                done = await runner.run_once()
                await runner.settle()
                total += done
                if done == 0:
                    break
        finally:
            await pool.close()
        return total

    return asyncio.run(go())


def fire_schedules_at(server: Any, at: Any) -> int:
    """One in-process scheduler batch at `at` (schedules due then fire, and move to their next occurrence)."""
    import asyncio

    from lunogram_server.db import open_pool
    from lunogram_server.schedules.scheduler import Scheduler

    async def go() -> int:
        pool = await open_pool(server.database_url, min_size=1, max_size=1)
        try:
            return await Scheduler(pool, clock=lambda: at).run_once()
        finally:
            await pool.close()

    return asyncio.run(go())
