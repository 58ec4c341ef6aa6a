"""The hardware abstraction layer for the ESP32: the ONLY module that touches hardware.

Everything the agent needs from the board goes through one ``Hal`` object: clocks, RTC
memory, randomness, sensors (internal temperature, ADC channels, an SHT3x on I2C),
battery voltage, Wi-Fi, UDP, sleep, the watchdog. ``fogagent.fakehal.FakeHal`` implements
the same methods without hardware (tests, the simulator); keep the two in step.

Notes on the ESP32 port of MicroPython (1.22 and later):
- ``time.ticks_ms`` restarts at every boot, deep-sleep wakes included; ``time.time_ns``
  runs on the RTC and survives deep sleep, so readings are stamped with it.
- RTC memory (``machine.RTC().memory()``) holds 2048 bytes across deep sleep, not across
  a power loss.
- Wi-Fi: the first association of a cold boot scans once for the strongest access point of
  the SSID; its BSSID and channel are kept in the RTC state and later wakes connect to it
  directly. Power save: none/min/max -> ``WLAN.PM_NONE/PM_PERFORMANCE/PM_POWERSAVE``.
"""

import time

import machine

from fogagent.sht3x import SHT3x

_SYNCED_AFTER = 1704067200  # 2024-01-01: a clock before this has never been set
_ATTEN = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


class Hal:
    def __init__(self, cfg):
        self.cfg = cfg
        self._rtc = machine.RTC()
        self._wlan = None
        self._wdt = None
        self._adc = {}
        self._sht = None
        self._sht_values = None
        # Unix time = time.time() + offset; the port's epoch is 2000 unless built for 1970.
        self._unix = 946684800 if time.gmtime(0)[0] == 2000 else 0

    # -- time ---------------------------------------------------------------------------

    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_add(self, t, delta):
        return time.ticks_add(t, delta)

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def now_ms(self):
        return time.time_ns() // 1000000

    def epoch(self):
        t = time.time() + self._unix
        return t if t >= _SYNCED_AFTER else None

    def epoch_ms(self):
        """Milliseconds since 1970 (UTC), None until the clock has been set."""
        return None if self.epoch() is None else self.now_ms() + self._unix * 1000

    def sync_clock(self, host):
        """Set the RTC from NTP (cold boot only: the RTC keeps it through deep sleep)."""
        ok, _ = self.wifi_connect(self.cfg["wifi"]["timeout_ms"], None)
        if not ok:
            return False
        try:
            import ntptime

            ntptime.host = host
            ntptime.settime()
            return True
        except (OSError, OverflowError):
            return False

    def rand(self, bits):
        import random  # seeded from the hardware RNG on the ESP32

        return random.getrandbits(bits)

    def sleep_ms(self, ms):
        time.sleep_ms(ms)

    # -- memory -------------------------------------------------------------------------

    def rtc_read(self):
        return self._rtc.memory()

    def rtc_write(self, blob):
        self._rtc.memory(blob)

    # -- sensors ------------------------------------------------------------------------

    def sample(self, values):
        """Fill ``values`` in the configuration's field order; None where a read failed."""
        fields = self.cfg["fields"]
        for j in range(len(values)):
            values[j] = None
        self._sht_values = None  # one SHT3x measurement serves both of its fields
        for s in self.cfg["sensors"]:
            try:
                v = self._read(s)
            except Exception:  # no ACK on the bus, a CRC mismatch, a driver bug: missing
                continue
            values[fields.index(s["field"])] = v * s["scale"] + s["offset"]

    def _read(self, s):
        kind = s["type"]
        if kind == "mcu_temp":
            import esp32

            if hasattr(esp32, "mcu_temperature"):  # S2, S3, C3, C6: degrees C
                return float(esp32.mcu_temperature())
            return (esp32.raw_temperature() - 32) / 1.8  # the original ESP32: Fahrenheit
        if kind == "adc":
            adc = self._adc_for(s["pin"], s["atten"])
            total = 0
            for _ in range(s["samples"]):
                total += adc.read_uv()
            return total / s["samples"] / 1e6  # volts
        if self._sht_values is None:
            self._sht_values = self._sht3x().measure()
        return self._sht_values[0 if kind == "sht3x_temp" else 1]

    def _adc_for(self, pin, atten):
        adc = self._adc.get(pin)
        if adc is None:
            a = machine.ADC
            adc = self._adc[pin] = a(machine.Pin(pin), atten=getattr(a, _ATTEN[atten]))
        return adc

    def _sht3x(self):
        if self._sht is None:
            c = self.cfg["i2c"]
            i2c = machine.I2C(
                c["id"], scl=machine.Pin(c["scl"]), sda=machine.Pin(c["sda"]), freq=c["freq"]
            )
            self._sht = SHT3x(i2c, c["sht3x_addr"], time.sleep_ms)
        return self._sht

    def battery_mv(self):
        b = self.cfg["battery"]
        if not b:
            return None
        try:
            adc = self._adc_for(b["pin"], "11db")
            uv = 0
            for _ in range(8):
                uv += adc.read_uv()
        except (OSError, ValueError):
            return None
        mv = int(uv / 8 * b["divider"] / 1000)
        return 0 if mv < 0 else 10000 if mv > 10000 else mv

    # -- network ------------------------------------------------------------------------

    def wifi_connect(self, timeout_ms, cache):
        """``(connected, cache)``; ``cache`` is ``[bssid, channel]`` or None. Gives up after
        ``timeout_ms`` (a failing network must not keep the node awake)."""
        import network

        t0 = time.ticks_ms()
        w = self._wlan
        if w is None:
            w = self._wlan = network.WLAN(network.STA_IF)
        w.active(True)
        if w.isconnected():
            return True, cache
        wc = self.cfg["wifi"]
        st = wc["static"]
        if st:
            w.ifconfig((st["ip"], st["mask"], st["gateway"], st["dns"] or st["gateway"]))
        if cache is None:
            cache = self._find_ap(w, wc["ssid"])
        try:
            if cache:
                try:
                    w.config(channel=cache[1])  # not every firmware takes it in STA mode
                except (OSError, ValueError, TypeError):
                    pass
                w.connect(wc["ssid"], wc["psk"], bssid=cache[0])
            else:
                w.connect(wc["ssid"], wc["psk"])
        except OSError:
            return False, None
        while not w.isconnected():
            if time.ticks_diff(time.ticks_ms(), t0) > timeout_ms:
                try:
                    w.disconnect()
                except OSError:
                    pass
                return False, None  # also forget the cached AP: it may have moved
            self.wdt_feed()
            time.sleep_ms(20)
        return True, cache

    def _find_ap(self, w, ssid):
        best = None
        try:
            for net in w.scan():  # (ssid, bssid, channel, RSSI, security, hidden)
                if net[0] == ssid.encode() and (best is None or net[3] > best[3]):
                    best = net
        except OSError:
            return None
        return [best[1], best[2]] if best else None

    def wifi_power(self, mode):
        w = self._wlan
        if w is None:
            return
        name = {"none": "PM_NONE", "min": "PM_PERFORMANCE", "max": "PM_POWERSAVE"}[mode]
        try:
            w.config(pm=getattr(w, name))
        except (AttributeError, OSError, ValueError):  # firmware without power-save control
            pass

    def wifi_off(self):
        w = self._wlan
        if w is not None:
            try:
                w.disconnect()
            except OSError:
                pass
            w.active(False)

    def udp_socket(self, host, port):
        import socket

        addr = socket.getaddrinfo(host, port)[0][-1]
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM), addr

    # -- power --------------------------------------------------------------------------

    def sleep(self, ms):
        if self.cfg["power"]["sleep"] == "deep":
            machine.deepsleep(ms)  # does not return: the board reboots into main.py
        else:
            machine.lightsleep(ms)

    def wdt_start(self, ms):
        self._wdt = machine.WDT(timeout=ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def safe_mode(self):
        """The safe pin (default GPIO0, the BOOT button) held low: do not start the agent."""
        pin = machine.Pin(self.cfg["power"]["safe_pin"], machine.Pin.IN, machine.Pin.PULL_UP)
        return pin.value() == 0
