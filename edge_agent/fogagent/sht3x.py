"""Sensirion SHT3x (SHT30/31/35) temperature and humidity over I2C: single shot, CRC checked.

The measurement is one command (0x2400: high repeatability, no clock stretching, which some
ESP32 I2C set-ups handle badly), a wait of at least 15.5 ms, and a 6-byte read:
temperature MSB, LSB, CRC, humidity MSB, LSB, CRC (datasheet §4.3, §4.12). A CRC that does
not match means a disturbed bus: the reading is refused, not guessed.
"""

MEASURE = b"\x24\x00"


def crc8(data):
    """CRC-8, polynomial 0x31, init 0xFF (datasheet §4.12): ``crc8(b"\\xbe\\xef") == 0x92``."""
    crc = 0xFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def convert(buf):
    """``(temperature_C, relative_humidity_pct)`` from the 6 bytes read; ValueError on CRC."""
    if len(buf) != 6 or crc8(buf[0:2]) != buf[2] or crc8(buf[3:5]) != buf[5]:
        raise ValueError("sht3x: CRC mismatch")
    t = buf[0] << 8 | buf[1]
    h = buf[3] << 8 | buf[4]
    return -45.0 + 175.0 * t / 65535.0, 100.0 * h / 65535.0


class SHT3x:
    """One sensor on an I2C bus (``machine.I2C`` or anything with writeto/readfrom)."""

    def __init__(self, i2c, addr=0x44, sleep_ms=None):
        self.i2c = i2c
        self.addr = addr
        self.sleep_ms = sleep_ms

    def measure(self):
        self.i2c.writeto(self.addr, MEASURE)
        if self.sleep_ms:
            self.sleep_ms(16)
        return convert(self.i2c.readfrom(self.addr, 6))
