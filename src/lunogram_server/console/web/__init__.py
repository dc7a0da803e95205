"""The console's pages (server-rendered with Jinja2, made live with htmx) and its static files."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from lunogram_server.console.web import auth, events, journeys, lists, messaging, overview, people, settings
from lunogram_server.console.web.base import ConsoleHeaders, Forbidden, LoginRequired, render

PAGES = [auth, overview, people, events, lists, journeys, messaging, settings]


class _Static(StaticFiles):
    """The console's files, cached briefly (they change with the server's version)."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers["Cache-Control"] = "public, max-age=300"
        return response


async def _login_required(request: Request, exc: Exception) -> Response:
    target = "/console/login"
    if request.method == "GET" and request.url.path != "/console":
        from urllib.parse import quote

        target += "?next=" + quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return Response(status_code=303, headers={"Location": target})


async def _forbidden(request: Request, exc: Exception) -> Response:
    return render(request, "error.html", 403, title="Not allowed", message=str(exc))


def install(app: FastAPI) -> None:
    for module in PAGES:
        app.include_router(module.router)
    app.mount("/console/static", _Static(packages=[("lunogram_server.console", "static")]), name="console-static")
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_middleware(ConsoleHeaders)
