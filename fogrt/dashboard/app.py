"""The dashboard's HTTP side: a read-only Starlette app (JSON, Server-Sent Events, page).

Endpoints (documented in ``docs/dashboard.md``): ``/`` and ``/static/*`` (the page),
``/api/overview``, ``/api/topology``, ``/api/devices``, ``/api/anomalies``,
``/api/models``, ``/api/stream`` (SSE, one snapshot a second) and ``/metrics``
(Prometheus). Only GET and HEAD exist: nothing here changes the node.

Access: with a token every request must carry it, as ``Authorization: Bearer <token>``,
``?token=<token>`` or the ``fogrt_token`` cookie that ``/?token=<token>`` sets (HttpOnly,
SameSite=Strict) before redirecting to ``/`` so the token leaves the address bar. Without
a token (loopback only) the Host header must name a loopback host, which keeps a web page
from reading the dashboard through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fogrt import __version__
from fogrt.dashboard.devices import QueryError, query_devices
from fogrt.dashboard.feed import AnomalyFeed
from fogrt.dashboard.sampler import Sampler, TooManySubscribers
from fogrt.metrics import CONTENT_TYPE, NodeMetrics

STATIC = Path(__file__).parent / "static"
"""The page: index.html, app.js, app.css and vendor/uplot (built files from npm)."""

COOKIE = "fogrt_token"

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]


@dataclass
class AppContext:
    """What the endpoints read; owned by :class:`~fogrt.dashboard.server.Dashboard`."""

    sampler: Sampler
    metrics: NodeMetrics
    feed: AnomalyFeed
    token: str | None


class _Json(JSONResponse):
    """JSON without NaN/Infinity (browsers refuse them): non-finite floats become null."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), separators=(",", ":"), allow_nan=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


NO_STORE = {"cache-control": "no-store"}

THREAD_ABOVE = 5000
"""Device tables bigger than this are sorted in a worker thread."""


def _engine_info(node: Any) -> dict[str, Any]:
    """Where the engine runs: ``inline``, or ``process`` with its pid(s) (one per device
    partition) and resident memory (of them all)."""
    pids = list(getattr(node, "engine_pids", ()))
    if not pids:
        return {"engine": "inline"}
    usage = getattr(node.engine, "process_usage", (0.0, 0))
    return {
        "engine": "process",
        "engine_pid": pids[0],
        "engine_pids": pids,
        "engine_rss_bytes": usage[1],
    }


def build_app(ctx: AppContext) -> ASGIApp:
    """The ASGI app: routes, then access control and security headers around them."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})

    async def overview(request: Request) -> Response:
        node = ctx.sampler.node
        body = ctx.sampler.overview()
        body["node"] = {
            "topology": node.topology.name,
            "version": __version__,
            "started_at": node.started_at,
            "coap_paths": node.service.paths() if node.service is not None else [],
            "policy": ctx.metrics.policy(),
            "online_factor": ctx.metrics.online_factor,
            **_engine_info(node),
        }
        return _Json(body, headers=NO_STORE)

    async def topology(request: Request) -> Response:
        return _Json(ctx.sampler.topology(), headers=NO_STORE)

    async def devices(request: Request) -> Response:
        p = request.query_params
        snapshot = list(ctx.metrics.devices().items())  # on the loop: the registry mutates
        try:
            query = functools.partial(
                query_devices,
                ctx.metrics,
                snapshot,
                offset=_int(p.get("offset"), 0),
                limit=_int(p.get("limit"), 50),
                sort=p.get("sort") or "-last_seen",
                q=p.get("q", "")[:100],
            )
            # Sorting 100k devices takes ~0.1-0.2 s: not on the loop that ACKs uplinks.
            page = await asyncio.to_thread(query) if len(snapshot) > THREAD_ABOVE else query()
        except QueryError as exc:
            return _Json({"error": str(exc)}, status_code=400)
        return _Json(page, headers=NO_STORE)

    async def anomalies(request: Request) -> Response:
        p = request.query_params
        try:
            limit, after = _int(p.get("limit"), 100), _int(p.get("after"), 0)
        except QueryError as exc:
            return _Json({"error": str(exc)}, status_code=400)
        items = ctx.feed.newest(max(1, min(limit, 500)), after)
        body = {"total": ctx.feed.total, "last_id": ctx.feed.last_id, "items": items}
        return _Json(body, headers=NO_STORE)

    async def models(request: Request) -> Response:
        return _Json(ctx.sampler.models(), headers=NO_STORE)

    async def stream(request: Request) -> Response:
        try:
            after = _int(request.query_params.get("after"), ctx.feed.last_id)
        except QueryError as exc:
            return _Json({"error": str(exc)}, status_code=400)
        try:
            queue = ctx.sampler.subscribe()
        except TooManySubscribers:
            return PlainTextResponse("too many dashboard clients", status_code=503)

        async def events() -> AsyncIterator[str]:
            sent = after
            try:
                yield "retry: 2000\n\n"
                snapshot = ctx.sampler.latest
                while True:
                    if snapshot is not None:
                        new = ctx.feed.newest(50, sent)
                        sent = ctx.feed.last_id
                        data = json.dumps(_finite({"snapshot": snapshot, "anomalies": new}))
                        yield f"data: {data}\n\n"
                    snapshot = await queue.get()
                    if snapshot is None:  # the dashboard is stopping
                        return
            finally:  # also when the client goes away (the task is cancelled)
                ctx.sampler.unsubscribe(queue)

        headers = {**NO_STORE, "x-accel-buffering": "no"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def metrics(request: Request) -> Response:
        families = ctx.metrics.collect()  # on the loop; formatting (most of it) off it
        body = await asyncio.to_thread(ctx.metrics.render, families)
        return Response(body, media_type=CONTENT_TYPE, headers=NO_STORE)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/overview", overview),
            Route("/api/topology", topology),
            Route("/api/devices", devices),
            Route("/api/anomalies", anomalies),
            Route("/api/models", models),
            Route("/api/stream", stream),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    guarded: ASGIApp = (
        _TokenAuth(app, ctx.token) if ctx.token is not None else _LoopbackHostOnly(app)
    )
    return _SecurityHeaders(guarded)


def _int(text: str | None, default: int) -> int:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise QueryError(f"expected an integer, got {text[:20]!r}") from None


class _TokenAuth:
    """Every request carries the token (header, query or cookie), or gets 401."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _valid(self, supplied: str | None) -> bool:
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        scheme, _, bearer = headers.get("authorization", "").partition(" ")
        query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])
        cookie = Request(scope).cookies.get(COOKIE)
        if scheme.lower() == "bearer" and self._valid(bearer.strip()):
            await self.app(scope, receive, send)
        elif self._valid(query[0]):
            if scope["path"] == "/":  # keep the token in a cookie, not in the address bar
                response: Response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, self.token.decode(), httponly=True, samesite="strict")
                await response(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        elif self._valid(cookie):
            await self.app(scope, receive, send)
        else:
            response = PlainTextResponse(
                "401: this dashboard needs its access token: open /?token=<token> or send "
                "'Authorization: Bearer <token>'",
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="fogrt"'},
            )
            await response(scope, receive, send)


class _LoopbackHostOnly:
    """Without a token, only requests addressed to a loopback host name are served."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _loopback_host(Headers(scope=scope).get("host", "")):
            response = PlainTextResponse("400: not a loopback Host header", status_code=400)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _loopback_host(host_header: str) -> bool:
    if host_header.startswith("["):
        host = host_header[1:].partition("]")[0]
    else:
        host = host_header.rpartition(":")[0] if ":" in host_header else host_header
    host = host.lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
