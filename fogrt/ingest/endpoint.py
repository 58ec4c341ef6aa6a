"""The fog node's CoAP endpoint: a lean path for uplinks, aiocoap for everything else.

One UDP socket serves the public port. Each datagram is looked at once:

- a plain CON/NON ``POST /<prefix>/<source...>`` (only Uri-Path, Content-Format, Uri-Host and
  Uri-Port options; no Block1, OSCORE, Observe) whose first path segment is a registered
  prefix goes to the *hot path*: the caller's handler is called with an :class:`Uplink` and
  its :class:`Reply` (or a Future of one, or a :class:`Later`) is sent back as a piggybacked
  ACK (CON) or a NON response with a fresh message ID (NON). Stock aiocoap spends ~170 µs of
  CPU on such a request; this path does the same work in a few µs.
- everything else (GET with Observe, ``/.well-known/core``, block-wise transfers, any other
  method or resource) is *relayed* to a full aiocoap server on 127.0.0.1:ephemeral, through
  one connected UDP socket per remote peer. Whatever aiocoap sends on that socket
  (responses, Observe notifications, block-wise continuations) goes back to the peer from
  the public socket, so block-wise, Observe and resource discovery keep full aiocoap
  semantics. aiocoap sees the relay socket as the remote; :meth:`CoapEndpoint.peer_of` maps
  it back to the real peer. Relay sockets close after ``relay_idle`` seconds without traffic
  either way, and at most ``max_relays`` exist (the least recently used one is closed).

RFC 7252 message-layer duties of the hot path:

- deduplication: ``(peer, message ID)`` -> the response bytes, kept for ``dedup_lifetime``
  (EXCHANGE_LIFETIME, 247 s, by default) and at most ``dedup_max_entries`` (oldest evicted
  first). A retransmitted CON gets the byte-identical response without calling the handler
  again; a retransmission that arrives while the handler's Future is still pending is
  absorbed (the one response, sent when the Future resolves, answers every copy: the
  request is never processed twice). NON duplicates are ignored. To cover every
  retransmission at a sustained rate R, ``dedup_max_entries`` should be at least
  R x MAX_TRANSMIT_SPAN (45 s); beyond that the application's own log deduplication is the
  safety net. A pending exchange pushed out of the cache is still remembered until it
  completes.
- an Empty CON (a "CoAP ping") gets a RST.
- message IDs: everything the public port originates towards a peer (NON responses, and the
  CON/NON notifications and separate responses aiocoap sends through the relay, which are
  renumbered) takes the next ID of one per-peer sequence, so no ID repeats towards a peer
  within EXCHANGE_LIFETIME (RFC 7252 §4.4) unless a peer sends 65536 in that time. A peer's
  ACK/RST for a relayed message is mapped back to aiocoap's ID (so a RST cancels an
  observation); an ACK/RST for a NON response, or for nothing, is ignored.
- a CON request with an unrecognised critical option gets a piggybacked 4.02 Bad Option (a
  NON one is rejected silently); unrecognised elective options are ignored.
- a malformed datagram is answered with a RST if it is a CON whose header could be read, and
  otherwise dropped silently.

Every outcome is counted in :attr:`CoapEndpoint.stats`. Nothing raises out of
``datagram_received``: the endpoint keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import os
import socket
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, Final, NamedTuple, cast

import structlog

from fogrt.errors import IngestError
from fogrt.ingest import coap

log = structlog.get_logger("fogrt.ingest")

#: RFC 7252 §4.8.2 with the default transmission parameters.
EXCHANGE_LIFETIME: Final = 247.0
COAP_PORT: Final = 5683

Address = tuple[Any, ...]
"""A socket address as asyncio reports it: ``(host, port)`` or ``(host, port, flow, scope)``."""


class Uplink(NamedTuple):
    """One request on the hot path."""

    prefix: str  #: the first Uri-Path segment, one of the registered prefixes
    source: tuple[str, ...]  #: the remaining Uri-Path segments
    payload: bytes
    content_format: int | None
    peer: Address
    confirmable: bool
    token: bytes
    mid: int


class Reply(NamedTuple):
    """The handler's answer. ``code`` is a response code in ``c.dd`` form."""

    code: str = "2.04"
    payload: bytes = b""
    content_format: int | None = None
    max_age: int | None = None


class Later(NamedTuple):
    """The handler's answer when ``reply`` may only be sent once ``ready`` has completed.

    Many requests may hand out the same ``ready`` future (the ingest log's group commit
    shares one per fsync): the endpoint adds one callback per future, not per request, and
    answers all of them when it completes. If ``ready`` fails or is cancelled, each request
    gets the answer a failed or cancelled handler Future would give.
    """

    ready: asyncio.Future[Any]
    reply: Reply


Handler = Callable[[Uplink], "Reply | Later | Awaitable[Reply]"]
_Waiter = tuple[tuple[Address, int], bool, int, bytes, Address, Reply]
"""A request waiting for its Later: (cache key, confirmable, message ID, token, peer, reply)."""

_MID_MAP_SIZE: Final = 256
_PENDING: Final = b""  # a CON whose handler has not answered yet
_SEEN_NON: Final = b"NON"  # a NON request already processed (duplicates are dropped)
_INTERNAL_ERROR: Final = Reply("5.00")
_ACK_HEAD: Final = 0x60  # version 1, type ACK
_NON_HEAD: Final = 0x50  # version 1, type NON


class _Relay:
    """A connected UDP socket that carries one remote peer's traffic to and from aiocoap.

    The CON/NON messages aiocoap originates (notifications, separate responses) carry message
    IDs from aiocoap's own counter; the relay renumbers them into the endpoint's per-peer
    sequence so that nothing the public port sends to a peer repeats a message ID, and maps
    the peer's ACK/RST back. ``to_peer`` maps aiocoap's IDs to ours (a retransmission keeps
    its ID), ``from_peer`` ours to aiocoap's; both keep the newest ``_MID_MAP_SIZE``.
    """

    __slots__ = ("fd", "from_peer", "last", "peer", "port", "sock", "to_peer")

    def __init__(self, peer: Address, sock: socket.socket, now: float) -> None:
        self.peer = peer
        self.sock = sock
        self.fd = sock.fileno()
        self.port: int = sock.getsockname()[1]
        self.last = now
        self.to_peer: OrderedDict[int, int] = OrderedDict()
        self.from_peer: dict[int, int] = {}


class CoapEndpoint(asyncio.DatagramProtocol):
    """A CoAP endpoint on one UDP port: the hot path for uplinks, aiocoap for the rest.

    ``handler`` is called synchronously for every new uplink; it returns a :class:`Reply`, a
    :class:`Later` (a reply to send once a shared future completes), or a Future (or any
    awaitable) of a reply. Raising :class:`~fogrt.errors.IngestError` answers
    4.00 with the message as diagnostic payload; any other exception answers 5.00 and is
    logged. ``site`` is the aiocoap resource tree (an ``aiocoap.resource.Site``) served by
    the full server.
    """

    def __init__(
        self,
        handler: Handler,
        site: Any,
        *,
        host: str = "::",
        port: int = COAP_PORT,
        prefixes: Iterable[str] = ("r",),
        dedup_lifetime: float = EXCHANGE_LIFETIME,
        dedup_max_entries: int = 100_000,
        relay_idle: float = 300.0,
        max_relays: int = 1024,
        known_options: Iterable[int] = coap.KNOWN_OPTIONS,
        rcvbuf: int | None = None,
        max_body: int | None = None,
    ) -> None:
        if dedup_lifetime <= 0 or relay_idle <= 0:
            raise ValueError("dedup_lifetime and relay_idle must be positive")
        if dedup_max_entries < 1 or max_relays < 1:
            raise ValueError("dedup_max_entries and max_relays must be at least 1")
        self._handler = handler
        self._site = site
        self._host = host
        self._port = port
        self._prefixes = frozenset(prefixes)
        self._lifetime = float(dedup_lifetime)
        self._max_entries = dedup_max_entries
        self._relay_idle = float(relay_idle)
        self._max_relays = max_relays
        self._known = frozenset(known_options)
        self._rcvbuf = rcvbuf
        self._max_body = max_body  # block-wise uploads beyond this get 4.13 early
        self._counts: Counter[str] = Counter()
        self._uplinks = 0  # the hot counters are plain ints; see ``stats``
        self._evicted = 0
        self._later = 0

        self._transport: asyncio.DatagramTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed: asyncio.Future[None] | None = None
        self._context: Any = None
        self._upstream: Address | None = None
        self._upstream_family = socket.AF_INET
        self._timer: asyncio.TimerHandle | None = None
        # The next message ID towards each peer (RFC 7252 §4.4: never reused towards the same
        # endpoint within EXCHANGE_LIFETIME), for NON responses and relayed notifications.
        self._peer_mids: OrderedDict[Address, int] = OrderedDict()

        self._cache: dict[tuple[Address, int], bytes] = {}
        # Keys in arrival order; the sweep appends (expiry time, sequence number) marks, so
        # the hot path records no time stamp per request.
        self._order: deque[tuple[Address, int]] = deque()
        self._marks: deque[tuple[float, int]] = deque()
        self._popped = 0  # keys popped from the front of _order so far
        self._inflight: set[tuple[Address, int]] = set()
        self._tasks: set[asyncio.Future[Reply]] = set()
        # Requests answered by a Later, grouped by its future: one callback per future.
        self._waiting: dict[asyncio.Future[Any], list[_Waiter]] = {}
        self._relays: OrderedDict[Address, _Relay] = OrderedDict()
        self._relay_ports: dict[int, Address] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> Address:
        """The bound public address (``port`` 0 resolves to the ephemeral port)."""
        if self._transport is None:
            raise RuntimeError("the endpoint is not started")
        sockname: Address = self._transport.get_extra_info("sockname")
        return sockname

    @property
    def upstream(self) -> Address:
        """The address of the full aiocoap server that non-uplink traffic is relayed to."""
        if self._upstream is None:
            raise RuntimeError("the endpoint is not started")
        return self._upstream

    @property
    def stats(self) -> Counter[str]:
        """A snapshot of the outcome counters, by reason: ``uplink``, ``deferred``,
        ``duplicate_answered``/``_pending``/``_ignored``, ``dedup_evicted``, ``ping``,
        ``bad_option``, ``malformed``, ``malformed_rst``, ``handler_rejected``/``_failed``,
        ``relayed_in``/``_out``, ``relay_opened``/``_evicted``/``_expired``, ..."""
        counts = self._counts.copy()
        if self._uplinks:
            counts["uplink"] = self._uplinks
        if self._evicted:
            counts["dedup_evicted"] = self._evicted
        if self._later:
            counts["deferred"] += self._later
        return counts

    @property
    def dedup_size(self) -> int:
        return len(self._cache)

    @property
    def relay_count(self) -> int:
        return len(self._relays)

    async def start(self) -> None:
        if self._transport is not None:
            raise RuntimeError("the endpoint is already started")
        import aiocoap

        loop = asyncio.get_running_loop()
        self._loop = loop
        self._context = await aiocoap.Context.create_server_context(
            self._site, bind=("127.0.0.1", 0), transports=["udp6"]
        )
        try:
            self._upstream = self._upstream_address(self._context)
            host = ipaddress.ip_address(self._upstream[0])
            if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
                self._upstream = (str(host.ipv4_mapped), self._upstream[1])
                self._upstream_family = socket.AF_INET
            elif isinstance(host, ipaddress.IPv6Address):
                self._upstream_family = socket.AF_INET6
            sock = await self._bind(loop)
            self._closed = loop.create_future()
            try:
                await loop.create_datagram_endpoint(lambda: self, sock=sock)
            except BaseException:
                sock.close()
                raise
        except BaseException:
            await self._context.shutdown()
            self._context = None
            raise
        self._schedule_sweep()
        log.info("coap_endpoint_started", address=self.address, upstream=self._upstream)

    async def stop(self) -> None:
        """Close the public socket, every relay socket and the aiocoap context."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for peer in list(self._relays):
            self._close_relay(peer)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
            if self._closed is not None:
                await self._closed
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        context, self._context = self._context, None
        if context is not None:
            await context.shutdown()
        self._cache.clear()
        self._order.clear()
        self._marks.clear()
        self._inflight.clear()
        log.info("coap_endpoint_stopped", stats=dict(self.stats))

    async def __aenter__(self) -> CoapEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _bind(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        infos = await loop.getaddrinfo(
            self._host, self._port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
        if not infos:  # pragma: no cover - getaddrinfo raises instead
            raise OSError(f"cannot resolve {self._host!r}")
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                # Dual stack: IPv4 peers arrive as ::ffff:a.b.c.d.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            if self._rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
                got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                if got < self._rcvbuf:  # capped (Linux reports double, bookkeeping included)
                    log.warning("coap_rcvbuf_capped", requested=self._rcvbuf, granted=got)
            sock.bind(sockaddr)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _upstream_address(context: Any) -> Address:
        # Context -> TokenManager -> MessageManager -> MessageInterfaceUDP6 (aiocoap 0.4.x).
        for tman in context.request_interfaces:
            mman = getattr(tman, "token_interface", None)
            iface = getattr(mman, "message_interface", None)
            transport = getattr(iface, "transport", None)
            if transport is not None:
                sockname: Address = transport.get_extra_info("socket").getsockname()
                return sockname
        raise RuntimeError("cannot find the address of the aiocoap server socket")

    # -- asyncio.DatagramProtocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (a device's port closed before our response arrived) are per datagram.
        self._counts["icmp_error"] += 1

    def datagram_received(self, data: bytes, addr: Address) -> None:
        try:
            up = coap.peek_uplink(data)
            if up is not None and up[3] and up[3][0] in self._prefixes:
                self._serve(up, addr)
            else:
                self._other(data, addr)
        except Exception:
            self._counts["internal_error"] += 1
            log.exception("coap_datagram_failed", peer=addr, nbytes=len(data))

    # -- the hot path ----------------------------------------------------------------------

    def _serve(self, up: coap.Uplink, addr: Address) -> None:
        """Deduplicate, call the handler, answer. Written for speed: few calls, no objects."""
        typ, mid, token, path, content_format, payload = up
        key = (addr, mid)
        cache = self._cache
        cached = cache.get(key)
        if cached is not None or (self._inflight and key in self._inflight):
            if cached is _PENDING or cached is None:
                self._counts["duplicate_pending"] += 1
            elif cached is _SEEN_NON or typ != coap.CON:
                self._counts["duplicate_ignored"] += 1
            else:
                self._counts["duplicate_answered"] += 1
                self._send(cached, addr)
            return
        confirmable = typ == coap.CON
        cache[key] = _PENDING if confirmable else _SEEN_NON
        order = self._order
        order.append(key)
        if len(cache) > self._max_entries:
            oldest = order.popleft()
            self._popped += 1
            self._evicted += 1
            if cache.pop(oldest) is _PENDING:
                self._inflight.add(oldest)
        self._uplinks += 1

        request = _new_uplink(
            Uplink, (path[0], path[1:], payload, content_format, addr, confirmable, token, mid)
        )
        try:
            result = self._handler(request)
        except IngestError as exc:
            self._counts["handler_rejected"] += 1
            result = Reply("4.00", str(exc).encode())
        except Exception:
            self._counts["handler_failed"] += 1
            log.exception("coap_handler_failed", peer=addr, source=path[1:])
            result = _INTERNAL_ERROR

        if type(result) is Reply and result[2] is None and result[3] is None:
            # The common case, inline: a reply with a payload and no options.
            code = _RESPONSE_CODES.get(result[0])
            reply_payload = result[1]
            if code is not None and type(reply_payload) is bytes:
                if confirmable:  # piggybacked on the ACK
                    head = bytes((0x60 | len(token), code, mid >> 8, mid & 0xFF))
                else:  # a NON response with a fresh message ID
                    rmid = self._next_mid(addr)
                    head = bytes((0x50 | len(token), code, rmid >> 8, rmid & 0xFF))
                data = head + token + b"\xff" + reply_payload if reply_payload else head + token
                if confirmable:
                    cache[key] = data
                transport = self._transport
                if transport is not None:
                    transport.sendto(data, addr)
                return
        if type(result) is Later:
            # Durable later: one callback per shared future, however many requests wait.
            self._later += 1
            ready = result[0]
            waiting = self._waiting
            waiters = waiting.get(ready)
            if waiters is None:
                if ready.done():
                    self._answer(ready, [(key, confirmable, mid, token, addr, result[1])])
                    return
                waiters = waiting[ready] = []
                ready.add_done_callback(self._release)
            waiters.append((key, confirmable, mid, token, addr, result[1]))
            return
        if isinstance(result, tuple):
            self._respond(key, confirmable, mid, token, addr, result)
            return
        future: asyncio.Future[Reply]
        if asyncio.isfuture(result):
            future = result
        elif inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self._tasks.add(future)
            future.add_done_callback(self._tasks.discard)
        else:
            self._respond(key, confirmable, mid, token, addr, result)
            return
        self._counts["deferred"] += 1
        if future.done():  # already resolved: answer now rather than on the next loop turn
            self._deferred(key, confirmable, mid, token, addr, future)
        else:
            future.add_done_callback(partial(self._deferred, key, confirmable, mid, token, addr))

    def _deferred(
        self,
        key: tuple[Address, int],
        confirmable: bool,
        mid: int,
        token: bytes,
        addr: Address,
        future: asyncio.Future[Reply],
    ) -> None:
        try:
            if future.cancelled():
                self._counts["handler_cancelled"] += 1
                reply: Any = Reply("5.03")
            elif (exc := future.exception()) is not None:
                if isinstance(exc, IngestError):
                    self._counts["handler_rejected"] += 1
                    reply = Reply("4.00", str(exc).encode())
                else:
                    self._counts["handler_failed"] += 1
                    log.error("coap_handler_failed", peer=addr, exc_info=exc)
                    reply = _INTERNAL_ERROR
            else:
                reply = future.result()
            self._respond(key, confirmable, mid, token, addr, reply)
        except Exception:
            self._counts["internal_error"] += 1
            log.exception("coap_response_failed", peer=addr)

    def _release(self, ready: asyncio.Future[Any]) -> None:
        waiters = self._waiting.pop(ready, None)
        if waiters:
            self._answer(ready, waiters)

    def _answer(self, ready: asyncio.Future[Any], waiters: list[_Waiter]) -> None:
        """Answer every request that waited for ``ready`` (done) with its Later's reply."""
        failed: Any = None
        if ready.cancelled():
            self._counts["handler_cancelled"] += len(waiters)
            failed = Reply("5.03")
        elif (exc := ready.exception()) is not None:
            if isinstance(exc, IngestError):
                self._counts["handler_rejected"] += len(waiters)
                failed = Reply("4.00", str(exc).encode())
            else:
                self._counts["handler_failed"] += len(waiters)
                log.error("coap_handler_failed", requests=len(waiters), exc_info=exc)
                failed = _INTERNAL_ERROR
        cache, codes, transport = self._cache, _RESPONSE_CODES, self._transport
        for key, confirmable, mid, token, addr, reply in waiters:
            try:
                if failed is not None:
                    reply = failed
                elif confirmable and type(reply) is Reply and reply[2] is None and reply[3] is None:
                    # The common case, inline: a piggybacked ACK with no options.
                    code = codes.get(reply[0])
                    payload = reply[1]
                    if code is not None and type(payload) is bytes:
                        data = bytes((0x60 | len(token), code, mid >> 8, mid & 0xFF)) + token
                        if payload:
                            data += b"\xff" + payload
                        if cache.get(key) is _PENDING:
                            cache[key] = data
                        elif self._inflight:
                            self._inflight.discard(key)
                        if transport is not None:
                            transport.sendto(data, addr)
                        continue
                self._respond(key, confirmable, mid, token, addr, reply)
            except Exception:
                self._counts["internal_error"] += 1
                log.exception("coap_response_failed", peer=addr)

    def _respond(
        self,
        key: tuple[Address, int],
        confirmable: bool,
        mid: int,
        token: bytes,
        addr: Address,
        reply: Any,
    ) -> None:
        if not confirmable:
            mid = self._next_mid(addr)
        try:
            data = _encode(_ACK_HEAD if confirmable else _NON_HEAD, mid, token, reply)
        except Exception:
            self._counts["bad_reply"] += 1
            log.error("coap_reply_invalid", peer=addr, reply=repr(reply)[:200], exc_info=True)
            data = _encode(_ACK_HEAD if confirmable else _NON_HEAD, mid, token, _INTERNAL_ERROR)
        if confirmable:
            if self._cache.get(key) is _PENDING:
                self._cache[key] = data
            elif self._inflight:
                self._inflight.discard(key)
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def _next_mid(self, peer: Address) -> int:
        mids = self._peer_mids
        mid = mids.get(peer)
        if mid is None:
            mid = int.from_bytes(os.urandom(2), "big")
            if len(mids) >= self._max_entries:
                mids.popitem(last=False)
        mids[peer] = (mid + 1) & 0xFFFF
        return mid

    # -- everything else -------------------------------------------------------------------

    def _other(self, data: bytes, addr: Address) -> None:
        try:
            msg = coap.parse(data)
        except coap.CoapFormatError:
            self._counts["malformed"] += 1
            # A CON whose header we can read is rejected with a RST (RFC 7252 §4.2); an
            # unknown version or a short datagram is ignored silently (§3).
            if len(data) >= 4 and data[0] >> 4 == 0x4:
                self._send(coap.build_empty(coap.RST, data[2] << 8 | data[3]), addr)
                self._counts["malformed_rst"] += 1
            return
        typ, code = msg.type, msg.code
        if code == coap.EMPTY:
            if typ == coap.CON:
                self._counts["ping"] += 1
                self._send(coap.build_empty(coap.RST, msg.mid), addr)
            elif typ == coap.NON:
                self._counts["empty_non_ignored"] += 1
            elif not self._relay_reply(data, addr, msg.mid):
                # An ACK or RST for one of our NON responses, or for nothing.
                self._counts["ack_rst_ignored"] += 1
            return
        if not coap.is_request(code):
            # Neither the hot path nor aiocoap's server sends requests: a response can only
            # be an ACK to a relayed CON (none are sent) or stray. Reject a CON one.
            if typ in (coap.ACK, coap.RST) and self._relay_reply(data, addr, msg.mid):
                return
            self._counts["response_ignored"] += 1
            if typ == coap.CON:
                self._send(coap.build_empty(coap.RST, msg.mid), addr)
            return
        if typ == coap.ACK or typ == coap.RST:
            self._counts["request_in_ack_or_rst"] += 1
            return
        known = self._known
        bad = [n for n, _ in msg.options if n & 1 and n not in known]
        if bad:
            self._counts["bad_option"] += 1
            if typ == coap.CON:
                text = "unrecognised critical option " + ", ".join(map(str, sorted(set(bad))))
                response = coap.build(
                    coap.ACK, coap.BAD_OPTION, msg.mid, msg.token, (), text.encode()
                )
                self._send(response, addr)
            return
        if self._max_body is not None and self._too_large(msg, addr):
            return
        if code == coap.POST and self._prefixes and self._plain_uplink(msg):
            with contextlib.suppress(coap.CoapFormatError):
                path = msg.path
                if path and path[0] in self._prefixes:
                    # A plain uplink that also carries unrecognised elective options.
                    up = (typ, msg.mid, msg.token, path, msg.content_format, msg.payload)
                    self._serve(up, addr)
                    return
        self._relay(data, addr)

    def _too_large(self, msg: coap.Message, addr: Address) -> bool:
        """Refuse a block-wise upload with 4.13 as soon as it announces or reaches more than
        ``max_body`` bytes, before aiocoap buffers it (RFC 7959 §2.9.3: Size1 = the limit)."""
        assert self._max_body is not None
        size1 = msg.option(coap.SIZE1)
        block1 = msg.option(coap.BLOCK1)
        total = coap.decode_uint(size1) if size1 is not None else 0
        if block1 is not None:
            value = coap.decode_uint(block1)
            szx = value & 0x7
            if szx == 7:
                return False  # reserved (BERT is TCP only): aiocoap answers it
            total = max(total, (value >> 4) * (16 << szx) + len(msg.payload))
        if total <= self._max_body:
            return False
        self._counts["too_large"] += 1
        if msg.type == coap.CON:
            text = f"body over {self._max_body} bytes".encode()
            options = [(coap.SIZE1, coap.encode_uint(self._max_body))]
            self._send(
                coap.build(
                    coap.ACK, coap.REQUEST_ENTITY_TOO_LARGE, msg.mid, msg.token, options, text
                ),
                addr,
            )
        return True

    def _plain_uplink(self, msg: coap.Message) -> bool:
        known = self._known
        cf = 0
        for number, value in msg.options:
            if number == coap.CONTENT_FORMAT:
                cf += 1
                if cf > 1 or len(value) > 2:
                    return False
            elif number not in coap.UPLINK_OPTIONS and number in known:
                return False
        return True

    def _send(self, data: bytes, addr: Address) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    # -- the relay to aiocoap ----------------------------------------------------------------

    def peer_of(self, remote: Any) -> Address | None:
        """The real peer behind an aiocoap request's remote (a relay socket), if any.

        ``remote`` is an ``aiocoap`` remote (``request.remote``), a socket address tuple or a
        relay socket's port number.
        """
        if isinstance(remote, int):
            return self._relay_ports.get(remote)
        sockaddr = getattr(remote, "sockaddr", remote)
        if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
            return self._relay_ports.get(sockaddr[1])
        return None

    def _relay_reply(self, data: bytes, addr: Address, mid: int) -> bool:
        """Pass a peer's ACK/RST for a message aiocoap sent back to aiocoap, renumbered."""
        relay = self._relays.get(addr)
        if relay is None:
            return False
        upstream_mid = relay.from_peer.get(mid)
        if upstream_mid is None:
            return False
        self._relay_send(relay, data[:2] + upstream_mid.to_bytes(2, "big") + data[4:])
        return True

    def _relay(self, data: bytes, addr: Address) -> None:
        relay = self._relays.get(addr)
        if relay is None:
            relay = self._open_relay(addr)
            if relay is None:
                return
        self._relay_send(relay, data)

    def _relay_send(self, relay: _Relay, data: bytes) -> None:
        relay.last = time.monotonic()
        self._relays.move_to_end(relay.peer)
        self._counts["relayed_in"] += 1
        try:
            relay.sock.send(data)
        except OSError:
            self._counts["relay_send_failed"] += 1

    def _open_relay(self, peer: Address) -> _Relay | None:
        if self._loop is None or self._upstream is None or self._transport is None:
            return None
        while len(self._relays) >= self._max_relays:
            self._close_relay(next(iter(self._relays)))
            self._counts["relay_evicted"] += 1
        sock = socket.socket(self._upstream_family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(self._upstream)
            relay = _Relay(peer, sock, time.monotonic())
            self._loop.add_reader(relay.fd, self._relay_readable, relay)
        except OSError:
            sock.close()
            self._counts["relay_open_failed"] += 1
            log.warning("coap_relay_failed", peer=peer, exc_info=True)
            return None
        self._relays[peer] = relay
        self._relay_ports[relay.port] = peer
        self._counts["relay_opened"] += 1
        return relay

    def _relay_readable(self, relay: _Relay) -> None:
        sock = relay.sock
        transport = self._transport
        for _ in range(64):
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                # ICMP port unreachable from the aiocoap side (it is shutting down).
                self._counts["relay_recv_failed"] += 1
                break
            self._counts["relayed_out"] += 1
            if len(data) >= 4 and data[0] & 0xE0 == 0x40:  # a CON or NON from aiocoap
                data = self._renumber(relay, data)
            if transport is not None:
                transport.sendto(data, relay.peer)
        if relay.peer in self._relays:
            relay.last = time.monotonic()
            self._relays.move_to_end(relay.peer)

    def _renumber(self, relay: _Relay, data: bytes) -> bytes:
        upstream_mid = data[2] << 8 | data[3]
        mid = relay.to_peer.get(upstream_mid)
        if mid is None:
            mid = self._next_mid(relay.peer)
            relay.to_peer[upstream_mid] = mid
            relay.from_peer[mid] = upstream_mid
            if len(relay.to_peer) > _MID_MAP_SIZE:
                _, old = relay.to_peer.popitem(last=False)
                relay.from_peer.pop(old, None)
        return data[:2] + mid.to_bytes(2, "big") + data[4:]

    def _close_relay(self, peer: Address) -> None:
        relay = self._relays.pop(peer)
        self._relay_ports.pop(relay.port, None)
        if self._loop is not None:
            self._loop.remove_reader(relay.fd)
        relay.sock.close()

    # -- housekeeping ----------------------------------------------------------------------

    def _schedule_sweep(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        return max(0.01, min(1.0, self._lifetime / 4, self._relay_idle / 4))

    def _sweep(self) -> None:
        try:
            now = time.monotonic()
            # Everything that arrived before now expires at now + lifetime: an entry lives
            # for dedup_lifetime plus at most one sweep interval.
            order, cache, marks = self._order, self._cache, self._marks
            marks.append((now + self._lifetime, self._popped + len(order)))
            while marks and marks[0][0] <= now:
                _, seq = marks.popleft()
                while self._popped < seq:
                    key = order.popleft()
                    self._popped += 1
                    if cache.pop(key) is _PENDING:
                        self._inflight.add(key)
            deadline = now - self._relay_idle
            while self._relays:
                peer, relay = next(iter(self._relays.items()))
                if relay.last > deadline:
                    break
                self._close_relay(peer)
                self._counts["relay_expired"] += 1
        except Exception:  # pragma: no cover - defensive: the timer must keep running
            log.exception("coap_sweep_failed")
        if self._transport is not None:
            self._schedule_sweep()


_new_uplink = cast(Callable[[type[Uplink], tuple[Any, ...]], Uplink], tuple.__new__)
_RESPONSE_CODES: Final[dict[str, int]] = {
    coap.code_to_str(code): code for code in range(0x40, 0xC0)
}


def _encode(head: int, mid: int, token: bytes, reply: Any) -> bytes:
    """The response datagram for ``reply`` (a :class:`Reply` or a plain tuple)."""
    if type(reply) is not Reply:
        reply = Reply(*reply)
    code = _RESPONSE_CODES.get(reply.code)
    if code is None:
        raise ValueError(f"not a response code (2.xx to 5.xx): {reply.code!r}")
    payload = reply.payload
    if not isinstance(payload, bytes):
        raise TypeError(f"reply payload must be bytes, not {type(payload).__name__}")
    if reply.content_format is None and reply.max_age is None:
        head_bytes = bytes((head | len(token), code, mid >> 8, mid & 0xFF))
        if payload:
            return head_bytes + token + b"\xff" + payload
        return head_bytes + token
    options = []
    if reply.content_format is not None:
        options.append((coap.CONTENT_FORMAT, coap.encode_uint(reply.content_format)))
    if reply.max_age is not None:
        options.append((coap.MAX_AGE, coap.encode_uint(reply.max_age)))
    return coap.build((head >> 4) & 3, code, mid, token, options, payload)
