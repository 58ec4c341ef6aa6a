"""A stand-in for MicroPython's ``machine`` (ESP32 flavour): records what the HAL does."""

calls = []


class RTC:
    _memory = b""

    def memory(self, blob=None):
        if blob is None:
            return RTC._memory
        if len(blob) > 2048:
            raise ValueError("buffer too long")
        RTC._memory = bytes(blob)


class Pin:
    IN = 1
    OUT = 2
    PULL_UP = 4
    levels = {}

    def __init__(self, n, mode=None, pull=None):
        self.n = n
        self.mode = mode
        self.pull = pull

    def value(self):
        return Pin.levels.get(self.n, 1)


class ADC:
    ATTN_0DB, ATTN_2_5DB, ATTN_6DB, ATTN_11DB = 0, 1, 2, 3
    uv = {}
    made = []

    def __init__(self, pin, atten=None):
        self.pin = pin.n
        self.atten = atten
        ADC.made.append((pin.n, atten))

    def read_uv(self):
        return ADC.uv[self.pin]


class I2C:
    devices = {}  # address -> the bytes a read returns
    writes = []

    def __init__(self, bus, scl=None, sda=None, freq=None):
        self.bus = bus
        self.freq = freq

    def writeto(self, addr, buf):
        if addr not in I2C.devices:
            raise OSError(19)  # ENODEV: no ACK
        I2C.writes.append((addr, bytes(buf)))

    def readfrom(self, addr, n):
        return I2C.devices[addr][:n]


class WDT:
    made = []

    def __init__(self, timeout):
        self.timeout = timeout
        self.fed = 0
        WDT.made.append(self)

    def feed(self):
        self.fed += 1


def deepsleep(ms):
    calls.append(("deepsleep", ms))


def lightsleep(ms):
    calls.append(("lightsleep", ms))
