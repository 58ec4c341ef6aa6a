"""The agent's loop with the fake HAL and a scripted fog: control deltas applied on the next
cycle, store-and-forward through outages, back-off and Max-Age, the awake bound, sequence
numbers across deep sleep and cold boots, the RTC budget, and the heap a wake uses.

Every cycle builds a new ``Agent`` on the same HAL: that is what a deep sleep does (the
board reboots; only RTC memory and flash remain)."""

import gc
from binascii import hexlify

from fakefog import FakeFog
from fogagent import config
from fogagent.agent import Agent
from fogagent.fakehal import FakeHal
from harness import MICROPYTHON, tmpdir


def make_cfg(fields=1, **sections):
    doc = {
        "device": "n1",
        "fog": {"host": "fog.local", "source": "room"},
        "wifi": {"ssid": "lab"},
        "sensors": [{"field": f"f{j}", "type": "mcu_temp"} for j in range(fields)],
        "store": {"dir": tmpdir()},
        "register": False,
        "log": {"level": "error", "file": None},
    }
    for k in sections:
        if isinstance(sections[k], dict) and isinstance(doc.get(k), dict):
            doc[k].update(sections[k])
        else:
            doc[k] = sections[k]
    cfg, errors = config.check(doc, "test")
    assert not errors, errors
    return cfg


def cycles(cfg, hal, n):
    """``n`` wakes, each a fresh Agent (deep sleep); the list of (awake_ms, agent)."""
    out = []
    for _ in range(n):
        t0 = hal.clock
        a = Agent(cfg, hal)
        ms = a.wake()
        out.append((hal.clock - t0, a))
        hal.sleep(ms)
    return out


def test_control_delta_is_applied_on_the_next_cycle(inputs):
    cfg = make_cfg()
    fog = FakeFog(5, inputs["delta"])
    temps = [20.0, 20.1, 20.2, 21.0, 21.05, 19.0]
    hal = FakeHal(cfg, [[t] for t in temps], fog)
    runs = cycles(cfg, hal, len(temps))
    ctl = runs[-1][1].st.control
    assert (ctl["v"], ctl["tx"], ctl["e"], ctl["sp"], ctl["i"]) == (5, "delta", 0.5, 30.0, 600)
    # The first reading went out under the defaults; from the second cycle on, send-on-delta.
    assert fog.values() == [20.0, 21.0, 19.0], fog.values()
    # The sleeps follow the commanded sample period from the first answer on.
    assert all(29000 <= ms <= 30000 for ms in hal.slept), hal.slept
    assert [b[0] for b in fog.order] == [0, 0, 0] and [b[1] for b in fog.order] == [0, 1, 2]
    for body in fog.bodies:
        print("UPLINK", hexlify(body).decode())


def until(cfg, hal, done, most=100):
    """Wake until ``done()`` (at most ``most`` times: the back-off may have grown)."""
    for _ in range(most):
        if done():
            return
        cycles(cfg, hal, 1)
    raise AssertionError(f"not done after {most} wakes")


def test_store_and_forward_delivers_everything_once(inputs):
    cfg = make_cfg(coap={"ack_timeout_ms": 500, "max_retransmit": 1})
    fog = FakeFog()
    temps = [float(i) for i in range(80)]
    hal = FakeHal(cfg, [[t] for t in temps], fog)
    cycles(cfg, hal, 5)
    fog.down = True  # the fog node is unreachable: datagrams vanish
    runs = cycles(cfg, hal, 20)
    a = runs[-1][1]  # what was sent and not acknowledged waits in flash, not in RTC memory
    assert a.outbox.pending() and not a.st.queue and a.st.fails > 0
    fog.down = False
    fog.lose_replies = True  # it takes the uplinks but its ACKs are lost
    until(cfg, hal, lambda: len(fog.bodies) > 5)
    fog.lose_replies = False
    until(cfg, hal, lambda: fog.duplicates > 0)  # resent: the same (boot, seq) again
    until(cfg, hal, lambda: hal.samples == len(temps))
    a = Agent(cfg, hal)
    assert not a.st.queue and not a.st.batch and not a.outbox.pending()
    assert fog.values() == temps, fog.values()  # every reading once, in order


def test_outbox_full_drops_the_oldest_and_reports_x(inputs):
    cfg = make_cfg(store={"max_bytes": 600, "max_per_uplink": 4})
    fog = FakeFog()
    hal = FakeHal(cfg, lambda h: [float(h.samples)], fog)  # reading k is k
    hal.wifi_up = False
    runs = cycles(cfg, hal, 190)
    a = runs[-1][1]
    dropped = a.st.dropped
    assert dropped > 0 and a.outbox.stats()[2] <= 600, (dropped, a.outbox.stats())
    hal.wifi_up = True
    # the back-off has grown to an hour: wake until the newest reading is through
    until(cfg, hal, lambda: fog.values()[-1:] == [float(hal.samples - 1)])
    dropped = Agent(cfg, hal).st.dropped  # more went while the back-off ran
    assert fog.values() == [float(k) for k in range(dropped, hal.samples)]  # the oldest went
    from fogagent import mpack

    assert [mpack.unpackb(b)["x"] for b in fog.bodies] == [dropped] * len(fog.bodies)


def test_failing_wifi_or_silent_fog_never_keeps_the_node_awake_past_the_bound(inputs):
    cfg = make_cfg(power={"max_awake_ms": 10000}, wifi={"ssid": "lab", "timeout_ms": 8000})
    fog = FakeFog()
    hal = FakeHal(cfg, [[1.0]], fog)
    hal.wifi_up = False
    awake = [ms for ms, _ in cycles(cfg, hal, 30)]
    fog.down = True
    hal.wifi_up = True
    awake += [ms for ms, _ in cycles(cfg, hal, 30)]
    assert max(awake) <= 10000, max(awake)
    assert max(awake) == 10000  # the bound was reached: the fog was silent


def test_service_unavailable_max_age_is_respected(inputs):
    cfg = make_cfg()
    fog = FakeFog()
    fog.busy = inputs["busy"]  # 5.03 with Max-Age 600
    hal = FakeHal(cfg, [[1.0]], fog)
    cycles(cfg, hal, 1)
    t_busy = hal.clock
    sent = len(hal.sent)
    fog.busy = None
    while len(hal.sent) == sent:
        cycles(cfg, hal, 1)
    assert hal.clock - t_busy >= 600 * 1000 - 60000, hal.clock - t_busy  # from the next wake on
    assert fog.values() and len(fog.order) >= 1


def test_sequence_survives_deep_sleep_and_cold_boot_takes_a_new_epoch(inputs):
    cfg = make_cfg()
    fog = FakeFog()
    hal = FakeHal(cfg, [[1.0]], fog)
    runs = cycles(cfg, hal, 3)
    assert [r[1].cold for r in runs] == [True, False, False]
    hal.rtc = b""  # a power loss: RTC memory is gone, flash is not
    runs = cycles(cfg, hal, 2)
    assert runs[0][1].cold and not runs[1][1].cold
    assert fog.order == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], fog.order


def test_unregistered_device_registers_and_resends(inputs):
    cfg = make_cfg(register=True)
    fog = FakeFog(1, inputs["full"])
    fog.unauthorized = 1
    hal = FakeHal(cfg, [[2.0]], fog)
    hal.rtc = b""
    cycles(cfg, hal, 1)  # cold boot: registers first, then the uplink is refused: again
    assert len(fog.registrations) == 2 and fog.values() == [2.0]
    assert fog.registrations[0]["fw"].startswith("fogagent/")


def test_refused_uplink_is_dropped_and_counted(inputs):
    cfg = make_cfg()
    fog = FakeFog()
    fog.refuse = True
    hal = FakeHal(cfg, [[3.0]], fog)
    runs = cycles(cfg, hal, 1)
    assert runs[0][1].st.dropped == 1 and not runs[0][1].st.queue


def test_rtc_state_stays_within_2048_bytes(inputs):
    cfg = make_cfg(fields=8, store={"max_bytes": 4096})
    fog = FakeFog(2, inputs["predict16"])  # predict with 16 coefficients, e=0, bt=1024
    n = [0]

    def readings(hal):
        n[0] += 1
        return [n[0] * 1.37 + j * 0.5 for j in range(8)]

    hal = FakeHal(cfg, readings, fog)
    cycles(cfg, hal, 1)  # the control arrives
    hal.wifi_up = False  # then the node is offline: readings pile up in RTC, then flash
    sizes = []
    for _ in range(150):
        cycles(cfg, hal, 1)
        sizes.append(len(hal.rtc))  # FakeHal.rtc_write refuses more than 2048 bytes
    a = Agent(cfg, hal)
    assert a.st.control["tx"] == "predict" and len(a.st.control["c"]) == 16
    assert max(sizes) <= 2048 and a.outbox.pending() and a.st.dropped > 0
    assert all(len(h) == 15 for h in a.st.hist)
    print("RTC max", max(sizes))


def test_heap_of_one_wake(inputs):
    if not MICROPYTHON:
        return  # gc.mem_alloc is MicroPython's
    cfg = make_cfg(fields=3, store={"max_per_uplink": 32})
    fog = FakeFog(5, inputs["delta"])
    hal = FakeHal(cfg, [[20.0, 40.0, 1.0]], fog)
    cycles(cfg, hal, 3)  # warm: the first cold boot writes files
    peaks = []
    for _ in range(20):
        gc.collect()
        before = gc.mem_alloc()
        gc.disable()  # nothing is freed: what a wake allocates bounds its peak
        try:
            cycles(cfg, hal, 1)
            peaks.append(gc.mem_alloc() - before)
        finally:
            gc.enable()
    gc.collect()
    print("HEAP wake_max", max(peaks), "wake_min", min(peaks), "alloc_after", gc.mem_alloc())


def test_run_main_loads_the_config_and_keeps_sleeping(inputs):
    import json

    from fogagent import run

    cfg = make_cfg(power={"boot_grace_ms": 2000})
    path = tmpdir() + "/config.json"
    with open(path, "w") as f:
        json.dump(cfg, f)
    fog = FakeFog()
    hals = []

    def factory(c):
        hals.append(FakeHal(c, [[1.5]], fog))
        return hals[-1]

    agent = run.main(path, factory, cycles=3)
    hal = hals[0]
    assert agent is not None and agent.cold and len(hal.slept) == 3 and hal.wdt == 15000
    assert fog.values() == [1.5, 1.5, 1.5]  # tx=always, batch 1: every reading

    class Safe(FakeHal):
        def safe_mode(self):
            return True

    assert run.main(path, lambda c: Safe(c), cycles=1) is None
    with open(path, "w") as f:
        f.write('{"device": 1}')
    assert run.main(path, factory, cycles=1) is None


def test_a_crashing_wake_is_logged_and_followed_by_a_sleep(inputs):
    from fogagent import run

    cfg = make_cfg()
    path = tmpdir() + "/config.json"
    import json

    with open(path, "w") as f:
        json.dump(cfg, f)

    class Broken(FakeHal):
        def sample(self, values):
            raise RuntimeError("sensor driver bug")

    hals = []
    run.main(path, lambda c: hals.append(Broken(c)) or hals[-1], cycles=2)
    assert hals[0].slept == [run.CRASH_SLEEP_MS] * 2


def test_silent_fog_at_registration_backs_off(inputs):
    cfg = make_cfg(register=True)
    fog = FakeFog()
    fog.down = True
    hal = FakeHal(cfg, [[1.0]], fog)
    runs = cycles(cfg, hal, 10)
    attempts = [a for _, a in runs if a.st.fails]
    assert runs[0][1].st.fails == 1 and runs[0][1].st.need_reg
    # ten one-minute wakes: the back-off (30 s, 60 s, 120 s, ...) allows only a few attempts
    assert len({a.st.fails for a in attempts}) < 6, [a.st.fails for a in attempts]
