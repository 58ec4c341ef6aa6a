"""A stand-in for MicroPython's ``network`` (one station interface)."""

STA_IF = 0
log = []


class WLAN:
    PM_NONE, PM_PERFORMANCE, PM_POWERSAVE = 0, 1, 2
    aps = [
        (b"lab", b"\xaa" * 6, 6, -70, 3, False),
        (b"lab", b"\xbb" * 6, 11, -45, 3, False),
        (b"other", b"\xcc" * 6, 1, -30, 3, False),
    ]
    joins = True  # False: associations never complete
    connected = False

    def __init__(self, interface):
        self.interface = interface

    def active(self, on=None):
        log.append(("active", on))

    def isconnected(self):
        return WLAN.connected

    def scan(self):
        log.append(("scan",))
        return WLAN.aps

    def connect(self, ssid, key, bssid=None):
        log.append(("connect", ssid, bssid))
        WLAN.connected = WLAN.joins

    def disconnect(self):
        log.append(("disconnect",))
        WLAN.connected = False

    def config(self, *args, **kwargs):
        log.append(("config", kwargs))

    def ifconfig(self, value=None):
        log.append(("ifconfig", value))
