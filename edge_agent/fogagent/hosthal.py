"""CPython only: the fake HAL with real UDP sockets, to run the agent against a real fog node.

Sensors, RTC memory, Wi-Fi and sleep stay simulated (``FakeHal``), but datagrams go over a
real socket and the CoAP timeouts are real time. The clock the readings are stamped with
(``now_ms``) is real elapsed time plus every simulated sleep, so a run of a hundred
one-minute cycles takes a fraction of a second and still reports sensible ages.
Not flashed to a board (it needs CPython's ``socket.getaddrinfo`` and ``time.monotonic``).
"""

import socket
import time

from fogagent.fakehal import FakeHal


class HostHal(FakeHal):
    def __init__(self, cfg, readings=None, start_ms=1000000000, seed=1):
        FakeHal.__init__(self, cfg, readings, None, start_ms, seed)
        self._t0 = time.monotonic()

    def ticks_ms(self):
        return int(time.monotonic() * 1000)

    def now_ms(self):
        return self.clock + int((time.monotonic() - self._t0) * 1000)

    def wifi_connect(self, timeout_ms, cache):
        if not self.wifi_up:
            return False, None  # an outage costs no real time in tests
        self.wifi_on = True
        return True, cache or [b"\x02\x00\x00\x00\x00\x01", 6]

    def udp_socket(self, host, port):
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, kind, proto)
        sent = self.sent

        class Recording:
            """The real socket, recording what is sent (tests count transmissions)."""

            def sendto(self, data, to):
                sent.append(bytes(data))
                return sock.sendto(data, to)

            def __getattr__(self, name):
                return getattr(sock, name)

        return Recording(), addr
