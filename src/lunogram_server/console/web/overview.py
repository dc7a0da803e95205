"""The overview: events accepted and processed per minute, the queue, dead letters, sends and errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lunogram_server.console import stats
from lunogram_server.console.web.base import Signed, page, partial, project_of
from lunogram_server.console.web.charts import Series, line_chart, minutes_axis

router = APIRouter(prefix="/console", include_in_schema=False)


async def _figures(request: Request, project_id: Any) -> dict[str, Any]:
    async with request.app.state.pool.connection() as conn:
        found = await stats.overview(conn, project_id)
    xs = minutes_axis(datetime.now(UTC))
    events_chart = line_chart(
        [
            Series("accepted", "s1", [(m, a) for m, a, _ in found.minutes]),
            Series("processed", "s2", [(m, p) for m, _, p in found.minutes]),
        ],
        xs,
        title="Events per minute, last hour: accepted and processed",
    )
    send_kinds = [("sent", "s1"), ("delivered", "s2"), ("failed", "s3"), ("bounced", "s4")]
    sends_chart = line_chart(
        [Series(kind, css, found.sends.get(kind, [])) for kind, css in send_kinds],
        xs,
        title="Messages per minute, last hour: sent, delivered, failed, bounced",
    )
    last = xs[-1]
    per_minute = {m: (a, p) for m, a, p in found.minutes}
    totals = {kind: sum(c for _, c in points) for kind, points in found.sends.items()}
    return {
        "overview": found,
        "events_chart": events_chart,
        "sends_chart": sends_chart,
        "send_kinds": send_kinds,
        "this_minute": per_minute.get(last, (0, 0)),
        "hour_accepted": sum(a for _, a, _ in found.minutes),
        "hour_processed": sum(p for _, _, p in found.minutes),
        "send_totals": totals,
    }


@router.get("")
async def overview(request: Request, session: Signed) -> Response:
    project_id = project_of(session)
    return await page(request, "overview.html", **(await _figures(request, project_id)))


@router.get("/overview/figures")
async def overview_figures(request: Request, session: Signed) -> Response:
    return partial("overview_figures.html", **(await _figures(request, project_of(session))))
