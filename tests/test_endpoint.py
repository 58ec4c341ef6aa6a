"""The CoAP endpoint over real UDP on 127.0.0.1: hot path, RFC 7252 duties, relay, libcoap."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap import resource

from fogrt.errors import IngestError
from fogrt.ingest import coap
from fogrt.ingest.coap import build, parse
from fogrt.ingest.endpoint import Address, CoapEndpoint, Later, Reply, Uplink

# -- the caller's side: a handler and an aiocoap Site ------------------------------------------


class Recorder:
    """A hot-path handler that echoes the payload, or hands out Futures when ``defer``."""

    def __init__(self, *, defer: bool = False) -> None:
        self.calls: list[Uplink] = []
        self.futures: list[asyncio.Future[Reply]] = []
        self.defer = defer

    def __call__(self, request: Uplink) -> Reply | asyncio.Future[Reply]:
        self.calls.append(request)
        if self.defer:
            future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self.futures.append(future)
            return future
        return Reply("2.04", b"echo:" + request.payload)


class Upload(resource.Resource):
    def __init__(self) -> None:
        super().__init__()
        self.received: list[bytes] = []

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        self.received.append(request.payload)
        text = f"got {len(request.payload)} bytes"
        return aiocoap.Message(code=aiocoap.CHANGED, payload=text.encode())


class Counter(resource.ObservableResource):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=str(self.value).encode())

    def bump(self) -> None:
        self.value += 1
        self.updated_state()


class WhoAmI(resource.Resource):
    def __init__(self) -> None:
        super().__init__()
        self.endpoint: CoapEndpoint | None = None

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        assert self.endpoint is not None
        return aiocoap.Message(payload=repr(self.endpoint.peer_of(request.remote)).encode())


class Fixture:
    def __init__(self) -> None:
        self.site = resource.Site()
        self.site.add_resource(
            [".well-known", "core"], resource.WKCResource(self.site.get_resources_as_linkheader)
        )
        self.upload = Upload()
        self.counter = Counter()
        self.whoami = WhoAmI()
        self.site.add_resource(["upload"], self.upload)
        self.site.add_resource(["counter"], self.counter)
        self.site.add_resource(["whoami"], self.whoami)


MakeEndpoint = Callable[..., Awaitable[CoapEndpoint]]


@pytest.fixture
def app() -> Fixture:
    return Fixture()


@pytest.fixture
async def make_endpoint(app: Fixture) -> AsyncIterator[MakeEndpoint]:
    started: list[CoapEndpoint] = []

    async def make(handler: Any = None, **kwargs: Any) -> CoapEndpoint:
        endpoint = CoapEndpoint(
            handler if handler is not None else Recorder(),
            app.site,
            host="127.0.0.1",
            port=0,
            **kwargs,
        )
        await endpoint.start()
        app.whoami.endpoint = endpoint
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        await endpoint.stop()


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    context = await aiocoap.Context.create_client_context(transports=["udp6"])
    yield context
    await context.shutdown()


class RawPeer(asyncio.DatagramProtocol):
    """A plain UDP socket that sends hand-made datagrams and queues what comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.put_nowait(data)

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(data)

    async def recv(self, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.received.get(), timeout)

    async def silence(self, within: float = 0.2) -> None:
        await asyncio.sleep(within)
        assert self.received.empty(), f"unexpected datagram {self.received.get_nowait()!r}"

    @property
    def address(self) -> Address:
        assert self.transport is not None
        sockname: Address = self.transport.get_extra_info("sockname")
        return sockname


@pytest.fixture
async def raw_peers() -> AsyncIterator[Callable[[CoapEndpoint], Awaitable[RawPeer]]]:
    transports: list[asyncio.BaseTransport] = []

    async def connect(endpoint: CoapEndpoint) -> RawPeer:
        transport, peer = await asyncio.get_running_loop().create_datagram_endpoint(
            RawPeer, remote_addr=endpoint.address[:2]
        )
        transports.append(transport)
        return peer

    yield connect
    for transport in transports:
        transport.close()
    await asyncio.sleep(0)  # let connection_lost run


def uri(endpoint: CoapEndpoint, path: str) -> str:
    return f"coap://127.0.0.1:{endpoint.address[1]}/{path}"


def uplink(
    mid: int, *, mtype: int = coap.CON, token: bytes = b"\x01\x02", payload: bytes = b"21.5"
) -> bytes:
    opts = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"plant-3"), (coap.URI_PATH, b"t1")]
    return build(mtype, "0.02", mid, token, opts, payload)


async def until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- the hot path ------------------------------------------------------------------------------


async def test_con_post_from_aiocoap_gets_a_piggybacked_reply(
    make_endpoint: MakeEndpoint, client: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    request = aiocoap.Message(
        code=aiocoap.POST, uri=uri(endpoint, "r/plant-3/t1"), payload=b"21.5", content_format=50
    )
    response = await client.request(request).response
    assert response.code == aiocoap.CHANGED
    assert response.mtype == aiocoap.ACK
    assert response.payload == b"echo:21.5"
    (call,) = handler.calls
    assert call.prefix == "r" and call.source == ("plant-3", "t1")
    assert call.content_format == 50 and call.confirmable and call.payload == b"21.5"
    assert call.peer[0] in ("127.0.0.1", "::ffff:127.0.0.1")
    assert endpoint.stats["uplink"] == 1 and endpoint.stats["relayed_in"] == 0


async def test_non_post_from_aiocoap_gets_a_non_reply(
    make_endpoint: MakeEndpoint, client: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=uri(endpoint, "r/dev1"),
        payload=b"x",
        transport_tuning=aiocoap.Unreliable,
    )
    response = await asyncio.wait_for(client.request(request).response, 5)
    assert response.mtype == aiocoap.NON
    assert response.payload == b"echo:x"
    assert not handler.calls[0].confirmable


async def test_future_handler_is_answered_when_the_future_resolves(
    make_endpoint: MakeEndpoint, client: Any
) -> None:
    handler = Recorder(defer=True)
    endpoint = await make_endpoint(handler)
    request = aiocoap.Message(code=aiocoap.POST, uri=uri(endpoint, "r/dev1"), payload=b"late")
    pending = asyncio.ensure_future(client.request(request).response)
    await until(lambda: len(handler.futures) == 1)
    await asyncio.sleep(0.05)
    assert not pending.done()
    handler.futures[0].set_result(Reply("2.01", b"stored", content_format=0, max_age=5))
    response = await asyncio.wait_for(pending, 5)
    assert response.code == aiocoap.CREATED
    assert response.payload == b"stored"
    assert response.opt.content_format == 0 and response.opt.max_age == 5
    assert endpoint.stats["deferred"] == 1


async def test_coroutine_handler_is_supported(make_endpoint: MakeEndpoint, raw_peers: Any) -> None:
    async def handler(request: Uplink) -> Reply:
        await asyncio.sleep(0.01)
        return Reply("2.04", request.payload.upper())

    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    peer.send(uplink(9, payload=b"abc"))
    assert parse(await peer.recv()).payload == b"ABC"


async def test_already_resolved_future_is_answered_at_once(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    def handler(request: Uplink) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        future.set_result(Reply("2.04", b"done"))
        return future

    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    peer.send(uplink(8))
    first = await peer.recv()
    assert parse(first).payload == b"done"
    peer.send(uplink(8))
    assert await peer.recv() == first


async def test_retransmitted_con_gets_the_identical_response_without_a_second_call(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    datagram = uplink(0x1234)
    peer.send(datagram)
    first = await peer.recv()
    peer.send(datagram)
    second = await peer.recv()
    assert first == second
    response = parse(first)
    assert (response.type, response.code, response.mid, response.token) == (
        coap.ACK,
        coap.CHANGED,
        0x1234,
        b"\x01\x02",
    )
    assert len(handler.calls) == 1
    assert endpoint.stats["duplicate_answered"] == 1


async def test_duplicate_while_pending_is_processed_once_and_answered_once(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder(defer=True)
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    datagram = uplink(77)
    peer.send(datagram)
    await until(lambda: len(handler.futures) == 1)
    peer.send(datagram)
    peer.send(datagram)
    await until(lambda: endpoint.stats["duplicate_pending"] == 2)
    await peer.silence(0.1)
    handler.futures[0].set_result(Reply("2.04", b"done"))
    answer = await peer.recv()
    assert parse(answer).payload == b"done"
    await peer.silence(0.1)
    peer.send(datagram)  # a later retransmission gets the stored response
    assert await peer.recv() == answer
    assert len(handler.calls) == 1


async def test_non_duplicates_are_ignored_and_non_replies_get_fresh_mids(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    peer.send(uplink(500, mtype=coap.NON, token=b"\xaa"))
    peer.send(uplink(500, mtype=coap.NON, token=b"\xaa"))
    peer.send(uplink(501, mtype=coap.NON, token=b"\xbb"))
    one, two = parse(await peer.recv()), parse(await peer.recv())
    await peer.silence(0.1)
    assert [m.type for m in (one, two)] == [coap.NON, coap.NON]
    assert [m.token for m in (one, two)] == [b"\xaa", b"\xbb"]
    assert one.mid != two.mid
    assert len(handler.calls) == 2
    assert endpoint.stats["duplicate_ignored"] == 1


async def test_empty_con_ping_gets_a_rst(make_endpoint: MakeEndpoint, raw_peers: Any) -> None:
    endpoint = await make_endpoint()
    peer = await raw_peers(endpoint)
    peer.send(coap.build_empty(coap.CON, 0xABCD))
    assert await peer.recv() == b"\x70\x00\xab\xcd"
    peer.send(coap.build_empty(coap.ACK, 0xABCE))  # an ACK or RST for nothing is ignored
    peer.send(coap.build_empty(coap.RST, 0xABCF))
    await peer.silence()
    assert endpoint.stats["ping"] == 1 and endpoint.stats["ack_rst_ignored"] == 2


async def test_unrecognised_critical_option_gets_4_02(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    opts = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"d"), (65001, b"?")]
    peer.send(build(coap.CON, "0.02", 10, b"\x07", opts, b"x"))
    response = parse(await peer.recv())
    assert (response.type, response.code, response.mid, response.token) == (
        coap.ACK,
        coap.BAD_OPTION,
        10,
        b"\x07",
    )
    assert b"65001" in response.payload
    # The same holds on the relayed side, which aiocoap itself would not check.
    peer.send(build(coap.CON, "0.01", 11, b"\x08", [(coap.URI_PATH, b"counter"), (2049, b"")]))
    assert parse(await peer.recv()).code == coap.BAD_OPTION
    # A NON request with one is rejected silently.
    peer.send(build(coap.NON, "0.02", 12, b"\x09", opts, b"x"))
    await peer.silence()
    assert handler.calls == [] and endpoint.stats["bad_option"] == 3


async def test_unrecognised_elective_option_is_ignored(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    opts = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"d"), (65000, b"?")]
    peer.send(build(coap.CON, "0.02", 20, b"\x07", opts, b"x"))
    response = parse(await peer.recv())
    assert response.code == coap.CHANGED and response.payload == b"echo:x"
    assert handler.calls[0].source == ("d",)
    assert endpoint.stats["relayed_in"] == 0


async def test_malformed_datagrams_are_counted_and_the_endpoint_keeps_serving(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    peer.send(b"\x40\x02\x00\x07\xff")  # CON, payload marker without payload: RST
    assert await peer.recv() == b"\x70\x00\x00\x07"
    peer.send(b"\x01")  # too short to have a message ID: dropped
    peer.send(b"\x80\x02\x00\x08")  # CoAP version 2: dropped
    peer.send(b"\x50\x02\x00\x09\xf0")  # NON with a reserved nibble: dropped
    await peer.silence()
    peer.send(uplink(30))
    assert parse(await peer.recv()).payload == b"echo:21.5"
    assert endpoint.stats["malformed"] == 4 and endpoint.stats["malformed_rst"] == 1
    assert len(handler.calls) == 1


async def test_handler_errors_become_coap_errors(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    def handler(request: Uplink) -> Reply:
        if request.payload == b"bad":
            raise IngestError("reading is not a number")
        if request.payload == b"bug":
            raise RuntimeError("boom")
        if request.payload == b"wrong":
            return Reply("0.01")  # not a response code
        return Reply()

    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    peer.send(uplink(1, payload=b"bad"))
    rejected = parse(await peer.recv())
    assert rejected.code == coap.BAD_REQUEST and rejected.payload == b"reading is not a number"
    peer.send(uplink(2, payload=b"bug"))
    assert parse(await peer.recv()).code == coap.INTERNAL_SERVER_ERROR
    peer.send(uplink(3, payload=b"wrong"))
    assert parse(await peer.recv()).code == coap.INTERNAL_SERVER_ERROR
    peer.send(uplink(4, payload=b"fine"))
    assert parse(await peer.recv()).code == coap.CHANGED
    assert endpoint.stats["handler_rejected"] == 1
    assert endpoint.stats["handler_failed"] == 1 and endpoint.stats["bad_reply"] == 1


async def test_failed_or_cancelled_futures_become_coap_errors(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder(defer=True)
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    for mid in (1, 2, 3):
        peer.send(uplink(mid))
    await until(lambda: len(handler.futures) == 3)
    handler.futures[0].set_exception(IngestError("no such source"))
    handler.futures[1].set_exception(RuntimeError("boom"))
    handler.futures[2].cancel()
    codes = {(m := parse(await peer.recv())).mid: m.code for _ in range(3)}
    assert codes == {
        1: coap.BAD_REQUEST,
        2: coap.INTERNAL_SERVER_ERROR,
        3: coap.SERVICE_UNAVAILABLE,
    }


class Batcher:
    """A hot-path handler that answers with a Later on one shared future per batch."""

    def __init__(self, reply: Reply | None = None) -> None:
        self.calls: list[Uplink] = []
        self.ready: asyncio.Future[None] | None = None
        self.reply = reply or Reply("2.04")

    def __call__(self, request: Uplink) -> Later:
        self.calls.append(request)
        if self.ready is None or self.ready.done():
            self.ready = asyncio.get_running_loop().create_future()
        return Later(self.ready, self.reply)


async def test_later_answers_a_whole_batch_when_its_future_completes(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Batcher(Reply("2.04", b"ok"))
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    non = await raw_peers(endpoint)
    for mid in range(1, 6):
        peer.send(uplink(mid, token=bytes((mid,))))
    non.send(uplink(9, mtype=coap.NON, token=b"\x09"))
    await until(lambda: len(handler.calls) == 6)
    peer.send(uplink(3, token=b"\x03"))  # a retransmission while pending: absorbed
    await until(lambda: endpoint.stats["duplicate_pending"] == 1)
    await peer.silence(0.1)
    await non.silence(0.0)
    assert handler.ready is not None
    handler.ready.set_result(None)  # e.g. the group commit's fsync completes
    answers = {parse(a := await peer.recv()).mid: a for _ in range(5)}
    assert sorted(answers) == [1, 2, 3, 4, 5]
    for mid, answer in answers.items():
        m = parse(answer)
        assert (m.type, m.code, m.token, m.payload) == (
            coap.ACK,
            coap.CHANGED,
            bytes((mid,)),
            b"ok",
        )
    m = parse(await non.recv())
    assert (m.type, m.code, m.token, m.payload) == (coap.NON, coap.CHANGED, b"\x09", b"ok")
    await peer.silence(0.1)
    peer.send(uplink(3, token=b"\x03"))  # a later retransmission: the identical bytes
    assert await peer.recv() == answers[3]
    assert len(handler.calls) == 6
    assert endpoint.stats["deferred"] == 6


async def test_later_on_a_completed_future_is_answered_at_once(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    endpoint = await make_endpoint(lambda request: Later(done, Reply("2.04", content_format=0)))
    peer = await raw_peers(endpoint)
    peer.send(uplink(5))
    m = parse(await peer.recv())
    assert (m.mid, m.code, m.content_format) == (5, coap.CHANGED, 0)


async def test_a_failed_later_fails_every_request_of_its_batch(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Batcher()
    endpoint = await make_endpoint(handler)
    peer = await raw_peers(endpoint)
    for mid in (1, 2, 3):
        peer.send(uplink(mid))
    await until(lambda: len(handler.calls) == 3)
    assert handler.ready is not None
    handler.ready.set_exception(RuntimeError("disk gone"))
    codes = [parse(await peer.recv()).code for _ in range(3)]
    assert codes == [coap.INTERNAL_SERVER_ERROR] * 3
    assert endpoint.stats["handler_failed"] == 3
    for mid in (4, 5):  # the next batch: rejected as an IngestError, then cancelled
        peer.send(uplink(mid))
    await until(lambda: len(handler.calls) == 5)
    handler.ready.set_exception(IngestError("not now"))
    assert [parse(await peer.recv()).code for _ in range(2)] == [coap.BAD_REQUEST] * 2
    peer.send(uplink(6))
    await until(lambda: len(handler.calls) == 6)
    handler.ready.cancel()
    assert parse(await peer.recv()).code == coap.SERVICE_UNAVAILABLE
    assert endpoint.stats["handler_rejected"] == 2 and endpoint.stats["handler_cancelled"] == 1


async def test_other_prefixes_and_methods_go_to_the_full_server(
    make_endpoint: MakeEndpoint, client: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler, prefixes=("r", "s"))
    response = await client.request(
        aiocoap.Message(code=aiocoap.POST, uri=uri(endpoint, "s/x"), payload=b"1")
    ).response
    assert response.payload == b"echo:1"
    request = aiocoap.Message(code=aiocoap.GET, uri=uri(endpoint, "r/x"))
    response = await client.request(request).response
    assert response.code == aiocoap.NOT_FOUND  # the Site has no /r/x
    response = await client.request(
        aiocoap.Message(code=aiocoap.POST, uri=uri(endpoint, "t/x"), payload=b"1")
    ).response
    assert response.code == aiocoap.NOT_FOUND
    assert len(handler.calls) == 1


async def test_default_dual_stack_socket_serves_ipv4_peers(app: Fixture) -> None:
    if not socket.has_ipv6:
        pytest.skip("this Python has no IPv6 support")
    handler = Recorder()
    endpoint = CoapEndpoint(handler, app.site, port=0)  # host "::"
    try:
        await endpoint.start()
    except OSError as exc:  # pragma: no cover - a kernel without IPv6
        pytest.skip(f"cannot bind [::]: {exc}")
    try:
        assert endpoint.address[0] == "::"
        loop = asyncio.get_running_loop()
        transport, peer = await loop.create_datagram_endpoint(
            RawPeer, remote_addr=("127.0.0.1", endpoint.address[1])
        )
        try:
            peer.send(uplink(1))
            assert parse(await peer.recv()).payload == b"echo:21.5"
        finally:
            transport.close()
            await asyncio.sleep(0)
        assert handler.calls[0].peer[0] == "::ffff:127.0.0.1"
    finally:
        await endpoint.stop()


async def test_stop_with_requests_in_flight_is_clean(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    release = asyncio.Event()

    async def slow(request: Uplink) -> Reply:
        await release.wait()
        return Reply()

    recorder = Recorder(defer=True)
    slow_endpoint = await make_endpoint(slow)
    deferred_endpoint = await make_endpoint(recorder)
    for endpoint in (slow_endpoint, deferred_endpoint):
        peer = await raw_peers(endpoint)
        peer.send(uplink(1))
        await until(partial(lambda e: e.stats["deferred"] == 1, endpoint))
        await endpoint.stop()
    recorder.futures[0].set_result(Reply())  # answered after stop: dropped quietly
    await asyncio.sleep(0.01)


async def test_start_failure_releases_everything(app: Fixture, make_endpoint: MakeEndpoint) -> None:
    taken = await make_endpoint()
    clash = CoapEndpoint(Recorder(), app.site, host="127.0.0.1", port=taken.address[1])
    with pytest.raises(OSError):
        await clash.start()
    await clash.stop()  # a no-op, but allowed


# -- bounded state -----------------------------------------------------------------------------


async def test_dedup_cache_stays_bounded_under_unique_requests(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler, dedup_max_entries=50)
    peer = await raw_peers(endpoint)
    for mid in range(200):
        peer.send(uplink(mid))
        await peer.recv()
        assert endpoint.dedup_size <= 50
    assert endpoint.stats["dedup_evicted"] == 150
    peer.send(uplink(199))  # recent: answered from the cache
    await peer.recv()
    assert len(handler.calls) == 200
    peer.send(uplink(0))  # evicted long ago: processed again
    await peer.recv()
    assert len(handler.calls) == 201
    assert endpoint.dedup_size <= 50


async def test_dedup_entries_expire_after_their_lifetime(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler, dedup_lifetime=0.1)
    peer = await raw_peers(endpoint)
    peer.send(uplink(5))
    await peer.recv()
    assert endpoint.dedup_size == 1
    await until(lambda: endpoint.dedup_size == 0)
    peer.send(uplink(5))
    await peer.recv()
    assert len(handler.calls) == 2


async def test_pending_exchange_pushed_out_of_the_cache_is_not_processed_twice(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    handler = Recorder(defer=True)
    endpoint = await make_endpoint(handler, dedup_max_entries=2)
    peer = await raw_peers(endpoint)
    for mid in (1, 2, 3, 4):
        peer.send(uplink(mid))
    await until(lambda: len(handler.futures) == 4)
    assert endpoint.dedup_size == 2
    peer.send(uplink(1))  # mid 1 is out of the cache but still pending
    await until(lambda: endpoint.stats["duplicate_pending"] == 1)
    for future in handler.futures:
        future.set_result(Reply())
    assert sorted([parse(await peer.recv()).mid for _ in range(4)]) == [1, 2, 3, 4]
    assert len(handler.calls) == 4


async def test_relays_are_bounded_and_expire_when_idle(
    make_endpoint: MakeEndpoint, raw_peers: Any
) -> None:
    endpoint = await make_endpoint(max_relays=2, relay_idle=0.2)
    peers = [await raw_peers(endpoint) for _ in range(3)]
    wkc = build(coap.CON, "0.01", 1, b"\x01", [(coap.URI_PATH, b".well-known"), (11, b"core")])
    for peer in peers:
        peer.send(wkc)
        assert parse(await peer.recv()).code == coap.CONTENT
        assert endpoint.relay_count <= 2
    assert endpoint.stats["relay_evicted"] == 1
    await until(lambda: endpoint.relay_count == 0)
    assert endpoint.stats["relay_expired"] == 2


# -- the relay to aiocoap ----------------------------------------------------------------------


async def test_well_known_core_is_served_through_the_public_port(
    make_endpoint: MakeEndpoint, client: Any
) -> None:
    endpoint = await make_endpoint()
    request = aiocoap.Message(code=aiocoap.GET, uri=uri(endpoint, ".well-known/core"))
    response = await client.request(request).response
    assert response.code == aiocoap.CONTENT
    links = response.payload.decode()
    assert "</upload>" in links and "</counter>;obs" in links
    assert endpoint.stats["relayed_in"] >= 1 and endpoint.stats["relayed_out"] >= 1


async def test_observe_notifications_reach_the_peer(
    make_endpoint: MakeEndpoint, client: Any, app: Fixture
) -> None:
    endpoint = await make_endpoint()
    request = aiocoap.Message(code=aiocoap.GET, uri=uri(endpoint, "counter"), observe=0)
    exchange = client.request(request)
    first = await asyncio.wait_for(exchange.response, 5)
    assert first.payload == b"0" and first.opt.observe is not None
    notifications = aiter(exchange.observation)
    for expected in (b"1", b"2"):
        app.counter.bump()
        notification = await asyncio.wait_for(anext(notifications), 5)
        assert notification.payload == expected
    exchange.observation.cancel()
    assert endpoint.relay_count == 1


async def test_peer_acks_and_rsts_reach_aiocoap_renumbered(
    make_endpoint: MakeEndpoint, raw_peers: Any, app: Fixture
) -> None:
    endpoint = await make_endpoint()
    peer = await raw_peers(endpoint)
    observe = [(coap.OBSERVE, b""), (coap.URI_PATH, b"counter")]
    peer.send(build(coap.CON, "0.01", 40, b"\x0b", observe))
    first = parse(await peer.recv())
    assert (first.type, first.mid, first.payload) == (coap.ACK, 40, b"0")
    assert first.option(coap.OBSERVE) is not None
    # aiocoap sends the notifications of a CON registration as CON, numbered by its own
    # counter; the relay renumbers them and maps the peer's ACK/RST back.
    app.counter.bump()
    one = parse(await peer.recv())
    assert (one.type, one.token, one.payload) == (coap.CON, b"\x0b", b"1")
    peer.send(coap.build_empty(coap.ACK, one.mid))
    await until(lambda: endpoint.stats["relayed_in"] == 2)
    app.counter.bump()
    two = parse(await peer.recv())
    assert (two.type, two.payload) == (coap.CON, b"2") and two.mid != one.mid
    # A RST for a notification cancels the observation, which only works if aiocoap gets
    # the message ID it used back.
    peer.send(coap.build_empty(coap.RST, two.mid))
    await until(lambda: not app.counter._observations)
    app.counter.bump()
    await peer.silence()
    assert endpoint.stats["ack_rst_ignored"] == 0
    # Notifications and NON responses share one message ID sequence towards the peer.
    peer.send(uplink(41, mtype=coap.NON))
    assert parse(await peer.recv()).mid == (two.mid + 1) & 0xFFFF
    assert two.mid == (one.mid + 1) & 0xFFFF


async def test_blockwise_post_reaches_the_site_intact(
    make_endpoint: MakeEndpoint, client: Any, app: Fixture
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    body = bytes(range(256)) * 12  # 3072 bytes: more than one 1024-byte block
    request = aiocoap.Message(code=aiocoap.POST, uri=uri(endpoint, "upload"), payload=body)
    response = await asyncio.wait_for(client.request(request).response, 10)
    assert response.code == aiocoap.CHANGED
    assert app.upload.received == [body]
    assert response.payload == b"got 3072 bytes"
    assert endpoint.stats["relayed_in"] >= 3 and handler.calls == []


async def test_block1_to_an_uplink_prefix_is_relayed_too(
    make_endpoint: MakeEndpoint, client: Any, app: Fixture
) -> None:
    app.site.add_resource(["r", "bulk"], app.upload)
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    body = b"x" * 2500
    request = aiocoap.Message(code=aiocoap.POST, uri=uri(endpoint, "r/bulk"), payload=body)
    response = await asyncio.wait_for(client.request(request).response, 10)
    assert response.payload == b"got 2500 bytes" and app.upload.received == [body]
    assert handler.calls == []


async def test_site_can_see_the_real_peer(make_endpoint: MakeEndpoint, raw_peers: Any) -> None:
    endpoint = await make_endpoint()
    peer = await raw_peers(endpoint)
    peer.send(build(coap.CON, "0.01", 3, b"\x03", [(coap.URI_PATH, b"whoami")]))
    response = parse(await peer.recv())
    assert response.payload.decode() == repr(peer.address)
    assert endpoint.peer_of(("127.0.0.1", 1)) is None


# -- interop with libcoap's C client -----------------------------------------------------------


def _coap_client() -> str:
    for name in ("coap-client-notls", "coap-client", "coap-client-openssl", "coap-client-gnutls"):
        if found := shutil.which(name):
            return found
    pytest.skip("libcoap's coap-client is not installed (Debian package libcoap3-bin)")


@pytest.fixture
def coap_client() -> str:
    return _coap_client()


async def run_coap_client(binary: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        binary,
        "-B",
        "10",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_libcoap_con_post_to_the_hot_path(
    make_endpoint: MakeEndpoint, coap_client: str, tmp_path: Path
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    body = tmp_path / "reading.txt"
    body.write_text("t=21.5;h=40")
    out = await run_coap_client(
        coap_client, "-m", "post", "-t", "65362", "-f", str(body), uri(endpoint, "r/plant-3")
    )
    assert out.strip() == "echo:t=21.5;h=40"
    (call,) = handler.calls
    assert call.source == ("plant-3",) and call.content_format == 65362
    assert call.payload == body.read_bytes() and call.confirmable


async def test_libcoap_non_post_to_the_hot_path(
    make_endpoint: MakeEndpoint, coap_client: str, tmp_path: Path
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    body = tmp_path / "reading.txt"
    body.write_text("21.5")
    out = await run_coap_client(
        coap_client, "-N", "-m", "post", "-t", "0", "-f", str(body), uri(endpoint, "r/a/b")
    )
    assert out.strip() == "echo:21.5"
    (call,) = handler.calls
    assert call.source == ("a", "b") and not call.confirmable and call.content_format == 0


async def test_libcoap_blockwise_post_goes_through_the_relay(
    make_endpoint: MakeEndpoint, coap_client: str, tmp_path: Path, app: Fixture
) -> None:
    handler = Recorder()
    endpoint = await make_endpoint(handler)
    body = tmp_path / "batch.csv"
    content = "".join(f"{i},plant-3,{20 + i / 10:.1f}\n" for i in range(60))
    body.write_text(content)
    out = await run_coap_client(
        coap_client, "-b", "64", "-m", "post", "-f", str(body), uri(endpoint, "upload")
    )
    assert out.strip() == f"got {len(content)} bytes"
    assert app.upload.received == [content.encode()]
    assert handler.calls == [] and endpoint.stats["relayed_in"] > len(content) // 64


async def test_libcoap_get_well_known_core(make_endpoint: MakeEndpoint, coap_client: str) -> None:
    endpoint = await make_endpoint()
    out = await run_coap_client(coap_client, "-m", "get", uri(endpoint, ".well-known/core"))
    assert "</counter>;obs" in out


# -- uvloop, the loop fogrt runs on ------------------------------------------------------------


def test_hot_path_and_relay_work_on_uvloop(app: Fixture) -> None:
    pytest.importorskip("uvloop")
    from fogrt.aio import run

    async def scenario() -> tuple[bytes, bytes, bytes, bytes]:
        handler = Recorder()
        endpoint = CoapEndpoint(handler, app.site, host="127.0.0.1", port=0)
        async with endpoint:
            loop = asyncio.get_running_loop()
            transport, peer = await loop.create_datagram_endpoint(
                RawPeer, remote_addr=endpoint.address[:2]
            )
            try:
                peer.send(uplink(1))
                hot = await peer.recv()
                peer.send(uplink(1))
                again = await peer.recv()
                peer.send(build(coap.CON, "0.01", 2, b"\x02", [(coap.URI_PATH, b"counter")]))
                relayed = await peer.recv()
                peer.send(coap.build_empty(coap.CON, 3))
                rst = await peer.recv()
            finally:
                transport.close()
                await asyncio.sleep(0)
            assert len(handler.calls) == 1
        return hot, again, relayed, rst

    hot, again, relayed, rst = run(scenario())
    assert hot == again and parse(hot).payload == b"echo:21.5"
    assert parse(relayed).code == coap.CONTENT and parse(relayed).payload == b"0"
    assert rst == b"\x70\x00\x00\x03"
