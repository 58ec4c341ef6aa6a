"""A HAL without hardware: a simulated clock, scripted sensors and network, fake RTC memory.

Pure Python that runs under CPython and MicroPython (any port), so the agent's loop can be
tested — and simulated — without a board. It implements the HAL contract (see
``fogagent.hal.Hal``, the real one):

    ticks_ms() ticks_add(t, d) ticks_diff(a, b)  now_ms()  epoch()  rand(bits)
    rtc_read() rtc_write(blob)  sample(values)  battery_mv()
    wifi_connect(timeout_ms, cache) -> (ok, cache)  wifi_power(mode)  wifi_off()
    udp_socket(host, port) -> (sock, addr)  sleep(ms)  sleep_ms(ms)
    wdt_start(ms) wdt_feed()  safe_mode()  sync_clock(host)

Time only moves when something takes time: a socket wait that times out advances the
clock by its timeout, a reply costs ``rtt_ms``, a Wi-Fi association ``wifi_ms``, a sleep
its duration. So a test of the back-off never waits, and gives the same result every run.

``fog`` is a function ``datagram -> [reply datagrams]`` (a scripted fog node); ``readings``
is a list of value lists (one per wake, the last one repeats) or a function
``hal -> values``. ``rtc`` survives as long as the object: to simulate a deep sleep, make
a new ``Agent`` with the same HAL; for a cold boot, set ``rtc = b""``.
"""


class FakeSocket:
    def __init__(self, hal, addr):
        self.hal = hal
        self.addr = addr
        self.timeout = 1.0
        self.inbox = []
        self.closed = False

    def sendto(self, data, addr):
        hal = self.hal
        if not hal.net_up:
            raise OSError(113)  # EHOSTUNREACH, as lwIP says when the link is down
        hal.sent.append(bytes(data))
        if hal.fog is not None and not hal.lossy:
            replies = hal.fog(bytes(data))
            if replies:
                hal.clock += hal.rtt_ms
                self.inbox.extend(replies)
        return len(data)

    def settimeout(self, seconds):
        self.timeout = seconds

    def recvfrom(self, size):
        if self.inbox:
            return self.inbox.pop(0)[:size], self.addr
        self.hal.clock += max(1, int(self.timeout * 1000 + 0.5))
        raise OSError(110)  # ETIMEDOUT, as MicroPython raises it

    def close(self):
        self.closed = True


class FakeHal:
    def __init__(self, cfg, readings=None, fog=None, start_ms=1000000000, seed=1):
        self.cfg = cfg
        self.clock = start_ms
        self.readings = readings
        self.fog = fog
        self.rtc = b""
        self.seed = seed or 1
        self.epoch_offset = None  # Unix seconds at clock 0; None: the clock is not synced
        self.wifi_up = True  # False: association fails (after its timeout)
        self.net_up = True  # False: sendto raises (no route)
        self.lossy = False  # True: datagrams vanish (a fog node that is down)
        self.wifi_ms = 300
        self.rtt_ms = 5
        self.battery = 3700
        self.pm = "none"
        self.wifi_on = False
        self.sent = []  # every datagram sent
        self.slept = []  # every sleep, ms
        self.samples = 0
        self.wdt = None

    # time
    def ticks_ms(self):
        return self.clock

    def ticks_add(self, t, delta):
        return t + delta

    def ticks_diff(self, a, b):
        return a - b

    def now_ms(self):
        return self.clock

    def epoch(self):
        if self.epoch_offset is None:
            return None
        return self.epoch_offset + self.now_ms() // 1000

    def epoch_ms(self):
        if self.epoch_offset is None:
            return None
        return self.epoch_offset * 1000 + self.now_ms()

    def rand(self, bits):
        # xorshift32: deterministic, the same under CPython and MicroPython
        x = self.seed
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.seed = x
        return x >> (32 - bits)

    # memory
    def rtc_read(self):
        return self.rtc

    def rtc_write(self, blob):
        if len(blob) > 2048:
            raise ValueError("RTC memory holds 2048 bytes")
        self.rtc = bytes(blob)

    # sensors
    def sample(self, values):
        r = self.readings
        if callable(r):
            got = r(self)
        elif r:
            got = r[min(self.samples, len(r) - 1)]
        else:
            got = ()
        for j in range(len(values)):
            values[j] = got[j] if j < len(got) else None
        self.samples += 1

    def battery_mv(self):
        return self.battery

    # network
    def wifi_connect(self, timeout_ms, cache):
        if not self.wifi_up:
            self.clock += timeout_ms
            return False, None
        self.clock += self.wifi_ms if cache is None else self.wifi_ms // 3
        self.wifi_on = True
        return True, cache or [b"\x02\x00\x00\x00\x00\x01", 6]

    def wifi_power(self, mode):
        self.pm = mode

    def wifi_off(self):
        self.wifi_on = False

    def udp_socket(self, host, port):
        return FakeSocket(self, (host, port)), (host, port)

    # power
    def sleep(self, ms):
        self.slept.append(ms)
        self.clock += ms

    def sleep_ms(self, ms):
        self.clock += ms

    def wdt_start(self, ms):
        self.wdt = ms

    def wdt_feed(self):
        pass

    def safe_mode(self):
        return False

    def sync_clock(self, host):
        self.epoch_offset = 1700000000 - self.clock // 1000
        return True
