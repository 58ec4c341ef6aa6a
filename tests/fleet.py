"""Simulated devices for fault-injection tests: real CoAP over UDP, resends like a device.

Each device sends its uplinks in order; an uplink is resent (same boot and sequence number,
new message id) until it is acknowledged with 2.04, whatever happens to the node meanwhile
(killed, restarting on a new port, answering 5.03). Readings are a deterministic function
of (device, seq, index), so a test knows exactly what every acknowledged reading was.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

from fogrt.ingest import coap
from fogrt.ingest.wire import encode_uplink

TALLY = textwrap.dedent('''\
    """A test operator: per-device count and sum of x (what exactly-once must preserve)."""
    from fogrt.operator import Operator


    class Tally(Operator):
        kind = "test.tally"

        def __init__(self) -> None:
            self.count = 0
            self.total = 0.0

        def process(self, event):
            self.count += 1
            self.total += event.fields["x"]
            return ()
    ''')


def install_tally_plugin(root: Path) -> Path:
    """A package with a ``fogrt.operators`` entry point, as pip would install it."""
    pkg = root / "fogrt_test_ops"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(TALLY)
    dist = root / "fogrt_test_ops-1.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fogrt-test-ops\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fogrt.operators]\ntest.tally = fogrt_test_ops:Tally\n")
    return root


def reading_value(device: int, seq: int, i: int) -> float:
    return float((device * 7919 + seq * 31 + i * 17) % 1000) / 10.0


def uplink(device: int, seq: int, per: int) -> bytes:
    readings = [(0.0, {"x": reading_value(device, seq, i), "y": float(i)}) for i in range(per)]
    return encode_uplink(f"dev-{device:02d}", 0, seq, readings)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.inbox.put_nowait(data)


class Fleet:
    def __init__(self, devices: int, uplinks: int, per: int, port: Callable[[], int]) -> None:
        self.devices = devices
        self.uplinks = uplinks
        self.per = per
        self.port = port
        self.acked = 0
        self.resends = 0
        self.busy = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._device(d) for d in range(self.devices)))

    async def _device(self, d: int) -> None:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(_Socket, local_addr=("127.0.0.1", 0))
        mid = d * 1000
        try:
            for seq in range(self.uplinks):
                body = uplink(d, seq, self.per)
                while True:
                    mid = (mid + 1) & 0xFFFF
                    datagram = coap.build(
                        coap.CON,
                        coap.POST,
                        mid,
                        b"",
                        [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"s")],
                        body,
                    )
                    transport.sendto(datagram, ("127.0.0.1", self.port()))
                    code = await self._answer(proto, mid)
                    if code == coap.CHANGED:
                        break
                    if code == coap.SERVICE_UNAVAILABLE:
                        self.busy += 1
                        await asyncio.sleep(0.05)
                    self.resends += 1
                self.acked += 1
        finally:
            transport.close()

    async def _answer(self, proto: _Socket, mid: int) -> int | None:
        deadline = asyncio.get_running_loop().time() + 0.5
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(proto.inbox.get(), left)
            except TimeoutError:
                return None
            try:
                msg = coap.parse(data)
            except coap.CoapFormatError:
                continue
            if msg.mid == mid and msg.type == coap.ACK:
                return msg.code
