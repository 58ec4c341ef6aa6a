"""fogagent: the fogrt edge agent for MicroPython (ESP32), also importable under CPython.

Modules, each small so that a board with ~100 KB of free heap imports only what it uses:

- ``mpack``     the msgpack subset of the wire format (encode and decode)
- ``coap``      a minimal CoAP client over one UDP socket (CON with retransmission, NON)
- ``wire``      uplink / registration bodies, control deltas (mirrors fogrt.ingest.wire)
- ``predictor`` the transmit policy: always, send-on-delta, dual prediction
- ``state``     what survives deep sleep, serialised into RTC memory (<= 2048 bytes)
- ``store``     flash: the store-and-forward outbox and the boot epoch
- ``config``    ``config.json``: schema, defaults, validation with clear errors
- ``agent``     one wake: sample -> decide -> batch -> send -> apply control -> persist
- ``run``       the device's main loop (used by ``main.py``)
- ``hal``       the ONLY module that touches hardware (ESP32); ``sht3x`` is its I2C driver
- ``log``       one-line logs to the REPL and, bounded, to a file
- ``fakehal``   a hardware-free HAL with a simulated clock (tests, simulator; not flashed)
- ``hosthal``   CPython only: the fake HAL with real UDP sockets (tests against a real fog)
"""

VERSION = "0.1.0"
FIRMWARE = "fogagent/" + VERSION
