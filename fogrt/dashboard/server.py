"""The dashboard as a service of the node: uvicorn inside the node's own event loop.

``Dashboard(node, host, port, token)`` after ``node.start()``: ``await dash.start()``
binds the port (0 picks a free one; :attr:`Dashboard.url` tells which), starts the 1 Hz
sampler and serves the app; ``await dash.stop()`` ends every open stream, stops the
server and unhooks from the node. It runs as tasks of the caller's loop (uvloop under
``fogrt run``): no thread, no second loop, and uvicorn's signal handlers are left out so
that Ctrl-C keeps draining the node first.

Access rule: bound to a loopback address the dashboard is open (to this machine only);
anywhere else it requires an access token (``token=``, else ``$FOGRT_HTTP_TOKEN``) and
refuses to start without one. A token that is given is always checked. ``require_token``
makes the rule explicit: ``True`` checks a token on loopback too (a reverse proxy on the
same host); ``False`` is only allowed on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING

import structlog
import uvicorn

from fogrt.dashboard.app import AppContext, build_app
from fogrt.dashboard.feed import AnomalyFeed
from fogrt.dashboard.sampler import Sampler
from fogrt.errors import FogError, InputError
from fogrt.metrics import NodeMetrics

if TYPE_CHECKING:
    from fogrt.node import FogNode

log = structlog.get_logger("fogrt.dashboard")

TOKEN_ENV = "FOGRT_HTTP_TOKEN"
"""The environment variable read when no token is passed."""

MIN_TOKEN_LENGTH = 16
"""Shorter tokens are refused (guessable over a LAN)."""

STOP_TIMEOUT = 5
"""Seconds a stop waits for the server before cancelling it."""


class DashboardError(FogError):
    """The dashboard cannot start (port in use, server failure): ``fogrt run`` exits 1."""


class DashboardConfigError(DashboardError, InputError):
    """The dashboard is configured wrong (no or short token for a public address, bad
    host): ``fogrt run`` exits 2 like any other invalid command line."""


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the dashboard on this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "")]
    [True, True, True, False, False, False]
    """
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the node's owner decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Dashboard:
    """The live dashboard and ``/metrics`` of one started :class:`~fogrt.node.FogNode`."""

    def __init__(
        self,
        node: FogNode,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        *,
        require_token: bool | None = None,
        metrics: NodeMetrics | None = None,
        sample_interval: float = 1.0,
    ) -> None:
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        where = f"--http {_join(host, port)}"
        loopback = is_loopback(host)
        if require_token is None:
            require_token = token is not None or not loopback
        if not require_token and not loopback:
            raise DashboardConfigError(f"{where}: only a loopback address may go without a token")
        if require_token and token is None:
            raise DashboardConfigError(
                f"{where}: "
                + ("a token is required" if loopback else "not a loopback address")
                + f", so the dashboard needs an access token: pass --http-token or set "
                f"{TOKEN_ENV} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
                + ("" if loopback else ", or bind to 127.0.0.1")
            )
        if require_token and token is not None and len(token) < MIN_TOKEN_LENGTH:
            raise DashboardConfigError(
                f"{where}: the access token is too short ({len(token)} characters; "
                f"at least {MIN_TOKEN_LENGTH})"
            )
        self.node = node
        self.host = host
        self.port = port
        self.token = token if require_token else None
        self.metrics = metrics if metrics is not None else NodeMetrics(node)
        self.feed = AnomalyFeed(node.topology)
        self.sampler = Sampler(node, self.metrics, self.feed, interval=sample_interval)
        self._server: _Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bound: tuple[str, int] | None = None

    @property
    def token_required(self) -> bool:
        return self.token is not None

    @property
    def url(self) -> str:
        """``http://host:port/`` as bound (a wildcard address shows this machine's name)."""
        if self._bound is None:
            raise RuntimeError("the dashboard is not started")
        host, port = self._bound
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()
        return f"http://{_join(host, port)}/"

    async def start(self) -> None:
        engine = self.node.engine
        if engine is None:
            raise RuntimeError("start the node before its dashboard")
        sock = _bind(self.host, self.port)
        self._bound = (self.host, sock.getsockname()[1])
        self.metrics.attach()
        engine.taps.append(self.feed.tap)
        self.sampler.sample()  # the first page load has numbers at once
        app = build_app(AppContext(self.sampler, self.metrics, self.feed, self.token))
        config = uvicorn.Config(
            app,
            loop="none",
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=STOP_TIMEOUT,
        )
        self._server = server = _Server(config)
        self._tasks = [
            asyncio.create_task(self.sampler.run(), name="dashboard-sampler"),
            asyncio.create_task(_serve(server, sock), name="dashboard-http"),
        ]
        while not server.started:
            serving = self._tasks[1]
            if serving.done():
                await self.stop()
                serving.result()  # raises why it stopped
                raise DashboardError(f"--http {_join(*self._bound)}: the server stopped")
            await asyncio.sleep(0.01)
        log.info("dashboard_started", url=self.url, token_required=self.token_required)

    async def stop(self) -> None:
        """End the streams, stop serving, unhook from the node (safe to call twice)."""
        self.sampler.close()
        if self._server is not None:
            self._server.should_exit = True
        tasks, self._tasks = self._tasks, []
        for task in reversed(tasks):  # the server first: it may be streaming samples
            if task.get_name() == "dashboard-http":
                done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT + 1)
                if not done:
                    task.cancel()
            else:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, DashboardError):
                await task
        engine = self.node.engine
        if engine is not None and self.feed.tap in engine.taps:
            engine.taps.remove(self.feed.tap)
        self.metrics.detach()
        if self._server is not None:
            self._server = None
            log.info("dashboard_stopped")


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:  # uvicorn exits the process on a failed start; a task must not
        raise DashboardError("the dashboard's HTTP server failed to start") from None
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket, or a DashboardError that says why not."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise DashboardConfigError(f"--http {_join(host, port)}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and host in ("", "::"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too
        sock.bind(address)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise DashboardError(f"--http {_join(host, port)}: cannot listen: {exc.strerror}") from None
    return sock


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
