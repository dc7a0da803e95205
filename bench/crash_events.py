"""Event ingest under repeated `kill -9`: nothing acknowledged is lost, nothing is applied twice.

    .venv/bin/python bench/crash_events.py [--kills 25] [--senders 2] [--users 30] [--seed N] [--keep]

Starts its own `lunogram serve` on a fresh embedded PostgreSQL (no DATABASE_URL: every restart also adopts
the PostgreSQL the killed server left running, as a self-hosted install would). Sender threads post batches
of 20-50 identifier events, each with a unique `data.seq`, one batch after another; the server is SIGKILLed
at a random point of each life (--min/--max seconds after it is ready) and started again, `--kills` times,
while the senders keep posting (an answer other than 202, or none, is simply not an acknowledgement). Then
the load stops, the inbox drains, and the history is checked against what was acknowledged:

    duplicates    events in history more than once (acknowledged or not): must be 0
    missing       acknowledged (202) events not in history: must be 0
    out of order  a sender's acknowledged events to one user, in history out of send order: must be 0

Exits 1 when any of them is not 0 (or events were parked as dead letters).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from _harness import PUBLIC_KEY, SECRET_KEY, free_port
from lunogram_server.db.embedded import EmbeddedPostgres

SEQ_SPACE = 10_000_000  # sender n numbers its events n * SEQ_SPACE + 0, 1, 2, ...


class Serve:
    """`lunogram serve` on an embedded PostgreSQL in `data_dir`, started and killed again and again."""

    def __init__(self, data_dir: Path, workers: int) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir / "serve.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGRAM_") and k != "DATABASE_URL"}
        self.env.update(
            LUNOGRAM_DATA_DIR=str(data_dir),
            LUNOGRAM_PORT=str(self.port),
            LUNOGRAM_WORKERS=str(workers),
            LUNOGRAM_BOOTSTRAP_SECRET_KEY=SECRET_KEY,
            LUNOGRAM_BOOTSTRAP_PUBLIC_KEY=PUBLIC_KEY,
            PYTHONUNBUFFERED="1",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.pg = EmbeddedPostgres(data_dir / "pg")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait until ready; returns the seconds it took."""
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lunogram_server", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"serve not ready after {timeout}s; see {self.log_path}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        """SIGTERM (which also stops the embedded PostgreSQL); if that fails, stop PostgreSQL directly."""
        try:
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                self.process.wait(60)
        finally:
            self.pg.stop()

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.pg.conninfo(), autocommit=True)


@dataclass
class Sender:
    number: int
    base_url: str
    users: int
    rng: random.Random
    stop: threading.Event
    next_seq: int = 0
    user_of: dict[int, int] = field(default_factory=dict)  # every seq sent -> the user it named
    acked: list[int] = field(default_factory=list)  # acknowledged seqs in send order
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    transport_errors: int = 0
    failure: BaseException | None = None

    def run(self) -> None:
        try:
            headers = {"Authorization": f"Bearer {SECRET_KEY}"}
            with httpx.Client(base_url=self.base_url, headers=headers, timeout=10) as client:
                while not self.stop.is_set():
                    self.post_one(client)
        except BaseException as exc:
            self.failure = exc

    def post_one(self, client: httpx.Client) -> None:
        batch = []
        for _ in range(self.rng.randint(20, 50)):
            seq = self.number * SEQ_SPACE + self.next_seq
            self.next_seq += 1
            user = self.rng.randrange(self.users)
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
            self.transport_errors += 1
            time.sleep(0.02)
            return
        self.statuses[response.status_code] += 1
        if response.status_code == 202:
            self.acked += [event["data"]["seq"] for event in batch]
        time.sleep(0.01)


def pending(serve: Serve) -> int:
    with serve.connect() as conn:
        row = conn.execute("SELECT count(*) FROM event_inbox WHERE dead_at IS NULL").fetchone()
    return int(row[0]) if row else 0


def check(serve: Serve, senders: list[Sender]) -> dict[str, int]:
    with serve.connect() as conn:
        history = conn.execute(
            "SELECT e.id, (e.data ->> 'seq')::bigint, y.external_id "
            "FROM user_events AS e JOIN user_identifiers AS y ON y.user_id = e.user_id ORDER BY e.id"
        ).fetchall()
        dead = conn.execute("SELECT count(*) FROM event_inbox WHERE dead_at IS NOT NULL").fetchone()
        users = conn.execute("SELECT count(*) FROM users").fetchone()
    user_of = {seq: user for s in senders for seq, user in s.user_of.items()}
    acked = {seq for s in senders for seq in s.acked}
    counts = collections.Counter(seq for _, seq, _ in history)
    position = {seq: (s.number, i) for s in senders for i, seq in enumerate(s.acked)}
    last: dict[tuple[str, int], int] = {}
    out_of_order = 0
    for _, seq, ext in history:
        if seq in position:
            number, sent_at = position[seq]
            if last.get((ext, number), -1) > sent_at:
                out_of_order += 1
            last[(ext, number)] = sent_at
    return {
        "events posted": len(user_of),
        "events acknowledged": len(acked),
        "events in history": len(history),
        "unacknowledged but stored": len(counts.keys() - acked),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missing": len(acked - counts.keys()),
        "unknown": len(counts.keys() - user_of.keys()),
        "wrong profile": sum(1 for _, seq, ext in history if ext != f"crash_user_{user_of.get(seq)}"),
        "out of order": out_of_order,
        "dead letters": int(dead[0]) if dead else -1,
        "users": int(users[0]) if users else -1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=25)
    parser.add_argument("--senders", type=int, default=2)
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--min", type=float, default=0.2, help="earliest kill, seconds into a life")
    parser.add_argument("--max", type=float, default=1.5, help="latest kill, seconds into a life")
    parser.add_argument("--workers", type=int, default=1, help="server's `serve --workers`")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data directory (and serve.log)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)

    data_dir = Path(tempfile.mkdtemp(prefix="lunogram-crash-"))
    data_dir.chmod(0o755)
    serve = Serve(data_dir, args.workers)
    stop = threading.Event()
    senders = [Sender(n, serve.base_url, args.users, random.Random(rng.random()), stop) for n in range(args.senders)]
    threads = [threading.Thread(target=s.run, daemon=True) for s in senders]
    restarts: list[float] = []
    at_kill: list[int] = []
    t_start = time.monotonic()
    try:
        print(f"first start (initdb) ... seed {seed}, data dir {data_dir}", flush=True)
        serve.start()
        for thread in threads:
            thread.start()
        for kill in range(args.kills):
            time.sleep(rng.uniform(args.min, args.max))
            serve.kill()
            at_kill.append(pending(serve))
            time.sleep(rng.uniform(0.0, 0.3))
            restarts.append(serve.start())
            acked = sum(len(s.acked) for s in senders)
            print(f"kill {kill + 1}/{args.kills}: {at_kill[-1]} pending at the kill, {acked} acknowledged so far")
        time.sleep(rng.uniform(args.min, args.max))
        stop.set()
        for thread in threads:
            thread.join(30)
        for sender in senders:
            if sender.failure is not None:
                raise sender.failure
        t_drain = time.monotonic()
        while pending(serve):
            if time.monotonic() - t_drain > 300:
                raise RuntimeError("the inbox did not drain in 300 s")
            time.sleep(0.1)
        drain = time.monotonic() - t_drain
        summary = check(serve, senders)
    finally:
        stop.set()
        serve.stop()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    statuses: collections.Counter[int] = collections.Counter()
    for sender in senders:
        statuses.update(sender.statuses)
    print()
    print(f"kills                     {args.kills} (SIGKILL {args.min}-{args.max} s into each life, seed {seed})")
    mean_restart = sum(restarts) / max(1, len(restarts))
    print(f"restart to ready          mean {mean_restart:.2f} s, max {max(restarts, default=0):.2f} s")
    print(f"pending at the kills      mean {sum(at_kill) / max(1, len(at_kill)):.0f}, max {max(at_kill, default=0)}")
    print(
        f"requests                  {dict(sorted(statuses.items()))}, "
        f"{sum(s.transport_errors for s in senders)} refused or cut off"
    )
    for key, value in summary.items():
        print(f"{key:<26}{value}")
    print(f"drain after the load      {drain:.1f} s; total {time.monotonic() - t_start:.0f} s")
    bad = {k: summary[k] for k in ("duplicates", "missing", "unknown", "wrong profile", "out of order", "dead letters")}
    bad = {k: v for k, v in bad.items() if v}
    if bad or set(statuses) - {202} or summary["users"] != args.users:
        print(f"FAILED: {bad or dict(statuses)}")
        return 1
    print("OK: every acknowledged event applied exactly once, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
