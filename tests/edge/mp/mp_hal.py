"""The real ESP32 HAL (fogagent.hal) against stand-ins for machine, network and esp32:
sensors and the SHT3x CRC, battery divider, Wi-Fi scan/cache/power-save, sleep, watchdog.
MicroPython only (the HAL uses MicroPython's ``time.ticks_ms``/``sleep_ms``)."""

import esp32  # noqa: F401  (the stand-in, on the path before the HAL imports it)
import machine
import network
from fogagent import config, sht3x
from fogagent.hal import Hal


def _cfg(**extra):
    doc = {
        "device": "d",
        "fog": {"host": "10.0.0.1", "source": "room"},
        "wifi": {"ssid": "lab", "psk": "pw", "timeout_ms": 500},
        "sensors": [
            {"field": "t", "type": "sht3x_temp"},
            {"field": "h", "type": "sht3x_hum"},
            {"field": "chip", "type": "mcu_temp"},
            {"field": "v", "type": "adc", "pin": 34, "scale": 2.0, "offset": 0.1},
        ],
        "battery": {"pin": 35, "divider": 2.0},
    }
    doc.update(extra)
    cfg, errors = config.check(doc, "hal")
    assert not errors, errors
    return cfg


def _sht_bytes(t_raw, h_raw):
    t = bytes([t_raw >> 8, t_raw & 0xFF])
    h = bytes([h_raw >> 8, h_raw & 0xFF])
    return t + bytes([sht3x.crc8(t)]) + h + bytes([sht3x.crc8(h)])


def test_crc8_matches_the_datasheet(inputs):
    assert sht3x.crc8(b"\xbe\xef") == 0x92


def test_sample_reads_every_sensor_once(inputs):
    machine.I2C.devices[0x44] = _sht_bytes(0x6666, 0x8000)
    machine.I2C.writes[:] = []
    machine.ADC.uv[34] = 1650000
    hal = Hal(_cfg())
    values = [None] * 4
    hal.sample(values)
    assert abs(values[0] - 25.0) < 0.01 and abs(values[1] - 50.0) < 0.01, values
    assert values[2] == 41.0 and abs(values[3] - 3.4) < 1e-9, values
    assert machine.I2C.writes == [(0x44, b"\x24\x00")]  # one measurement for both fields


def test_a_bad_crc_or_a_missing_device_gives_missing_values(inputs):
    data = bytearray(_sht_bytes(0x6666, 0x8000))
    data[2] ^= 1
    machine.I2C.devices[0x44] = bytes(data)
    machine.ADC.uv[34] = 0
    hal = Hal(_cfg())
    values = [0.0] * 4
    hal.sample(values)
    assert values[0] is None and values[1] is None and values[2] == 41.0
    del machine.I2C.devices[0x44]
    hal.sample(values)
    assert values[:2] == [None, None]


def test_battery_through_the_divider(inputs):
    machine.ADC.uv[35] = 1850000
    assert Hal(_cfg()).battery_mv() == 3700
    assert Hal(_cfg(battery=None)).battery_mv() is None


def test_wifi_scans_once_then_connects_to_the_cached_access_point(inputs):
    network.log[:] = []
    network.WLAN.connected = False
    hal = Hal(
        _cfg(wifi={"ssid": "lab", "psk": "pw", "static": {"ip": "10.0.0.9", "gateway": "10.0.0.1"}})
    )
    ok, cache = hal.wifi_connect(1000, None)
    assert ok and cache == [b"\xbb" * 6, 11], cache  # the strongest AP of the SSID
    assert ("scan",) in network.log and ("connect", "lab", b"\xbb" * 6) in network.log
    assert ("ifconfig", ("10.0.0.9", "255.255.255.0", "10.0.0.1", "10.0.0.1")) in network.log
    hal.wifi_power("max")
    assert network.log[-1] == ("config", {"pm": network.WLAN.PM_POWERSAVE})
    hal.wifi_off()
    network.log[:] = []
    ok, cache2 = Hal(_cfg()).wifi_connect(1000, cache)  # after a deep sleep
    assert ok and cache2 == cache and ("scan",) not in network.log


def test_wifi_gives_up_after_its_timeout_and_forgets_the_cache(inputs):
    network.WLAN.connected = False
    network.WLAN.joins = False
    try:
        ok, cache = Hal(_cfg()).wifi_connect(60, [b"\xaa" * 6, 6])
    finally:
        network.WLAN.joins = True
    assert not ok and cache is None


def test_sleep_watchdog_rtc_safe_pin_and_udp(inputs):
    machine.calls[:] = []
    hal = Hal(_cfg())
    hal.sleep(30000)
    Hal(_cfg(power={"sleep": "light"})).sleep(5000)
    assert machine.calls == [("deepsleep", 30000), ("lightsleep", 5000)]
    hal.wdt_start(15000)
    hal.wdt_feed()
    assert machine.WDT.made[-1].timeout == 15000 and machine.WDT.made[-1].fed == 1
    hal.rtc_write(b"state")
    assert Hal(_cfg()).rtc_read() == b"state"
    assert not hal.safe_mode()
    machine.Pin.levels[0] = 0
    assert hal.safe_mode()
    machine.Pin.levels[0] = 1
    sock, addr = hal.udp_socket("10.0.0.1", 5683)
    assert addr == ("10.0.0.1", 5683) and sock.kind == 2
    assert 0 <= hal.rand(16) < 65536
    assert hal.ticks_diff(hal.ticks_add(hal.ticks_ms(), 50), hal.ticks_ms()) <= 50
