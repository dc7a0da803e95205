"""Event subscribers that tests load into a real `lunogram serve` via LUNOGRAM_EVENT_SUBSCRIBERS=event_plugins:Name
(the test puts tests/ on the server's PYTHONPATH)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from lunogram_server.events.models import ProcessedEvent

LOG_TABLE = """
CREATE TABLE test_subscriber_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    inbox_id   bigint NOT NULL,
    kind       text NOT NULL,
    target_id  uuid NOT NULL,
    name       text NOT NULL,
    data       jsonb NOT NULL,
    broadcast  boolean NOT NULL,
    member_ids text NOT NULL   -- sorted, comma separated
)
"""


class TableRecorder:
    """Writes every event it is handed into test_subscriber_log, in the worker's transaction: only what the
    worker commits shows up there, so the table tells how many times each event was really delivered."""

    async def on_events(self, conn: AsyncConnection[Any], events: Sequence[ProcessedEvent]) -> None:
        async with conn.cursor() as cursor:
            await cursor.executemany(
                "INSERT INTO test_subscriber_log (inbox_id, kind, target_id, name, data, broadcast, member_ids)"
                " VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s)",
                [
                    (
                        e.inbox_id,
                        e.kind,
                        e.target_id,
                        e.name,
                        json.dumps(e.data),
                        e.broadcast,
                        ",".join(sorted(str(m) for m in e.member_ids)),
                    )
                    for e in events
                ],
            )
