"""Published journey versions, parsed once per process: a published version never changes, so the cache
needs no invalidation (drafts are never run)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import UUID

from psycopg import AsyncConnection

from lunogram_server.db import load_queries
from lunogram_server.journeys.models import Graph

Q = load_queries("lunogram_server.journeys")
Key = tuple[UUID, int]


class Graphs:
    def __init__(self, size: int = 2000) -> None:
        self.size = size
        self._parsed: OrderedDict[Key, Graph] = OrderedDict()

    async def get(self, conn: AsyncConnection[Any], keys: set[Key]) -> dict[Key, Graph]:
        found = {key: self._parsed[key] for key in keys if key in self._parsed}
        missing = [key for key in keys if key not in found]
        if missing:
            params = {"journeys": [j for j, _ in missing], "versions": [v for _, v in missing]}
            cursor = await conn.execute(Q["graphs"], params)
            for journey_id, version, graph in await cursor.fetchall():
                parsed = Graph.model_validate(graph)
                found[(journey_id, version)] = parsed
                self._parsed[(journey_id, version)] = parsed
            while len(self._parsed) > self.size:
                self._parsed.popitem(last=False)
        for key in found:
            self._parsed.move_to_end(key)
        return found


GRAPHS = Graphs()
