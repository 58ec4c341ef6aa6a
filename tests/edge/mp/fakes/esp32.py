"""A stand-in for MicroPython's ``esp32`` module (an S3: mcu_temperature in degrees C)."""


def mcu_temperature():
    return 41
