"""The device's main loop: load the configuration, build the HAL and the agent, then
wake -> sleep forever. With deep sleep the board resets at every wake and ``main.py``
calls this again; the agent's state comes back from RTC memory.

Nothing here may keep a node awake: a wake that raises is logged and followed by a sleep
of ``CRASH_SLEEP_MS`` (never a tight crash loop that drains the battery), and the watchdog
(deep-sleep mode only: ESP32's cannot be stopped or paused across a light sleep longer than
its timeout) resets a wake that hangs past ``max_awake_ms`` + 5 s.
"""

from fogagent import VERSION, config
from fogagent.agent import Agent
from fogagent.log import Log
from fogagent.store import join

CRASH_SLEEP_MS = 60000


def _traceback(e):
    try:
        import sys

        sys.print_exception(e)  # MicroPython
    except AttributeError:
        import traceback

        traceback.print_exception(e)


def main(path="config.json", hal_factory=None, cycles=None):
    """Run the agent; returns it after ``cycles`` wakes (tests; on a board: never)."""
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        print("fogagent: not starting, the configuration is invalid:")
        print(e)
        return None
    if hal_factory is None:
        from fogagent.hal import Hal as hal_factory
    hal = hal_factory(cfg)
    power = cfg["power"]
    if hal.safe_mode():
        print("fogagent: safe pin GPIO%d is low: not starting" % power["safe_pin"])
        return None
    lc = cfg["log"]
    log = Log(
        hal.now_ms,
        lc["level"],
        join(cfg["store"]["dir"], lc["file"]) if lc["file"] else None,
        lc["file_level"],
        lc["max_bytes"],
    )
    agent = Agent(cfg, hal, log)
    if agent.cold:
        log.info("agent_started", version=VERSION, device=cfg["device"], boot=agent.st.boot)
        if power["boot_grace_ms"]:
            # A window for mpremote / Ctrl-C before the first deep sleep takes USB away.
            print("fogagent: starting in %d ms (Ctrl-C for the REPL)" % power["boot_grace_ms"])
            hal.sleep_ms(power["boot_grace_ms"])
        if cfg["ntp"]:
            hal.sync_clock(cfg["ntp"])
    if power["watchdog"] and power["sleep"] == "deep":
        hal.wdt_start(power["max_awake_ms"] + 5000)
    n = 0
    while cycles is None or n < cycles:
        try:
            ms = agent.wake()
        except Exception as e:  # the loop must go on sleeping whatever failed
            log.error("wake_failed", why=repr(e))
            _traceback(e)
            ms = CRASH_SLEEP_MS
        n += 1
        hal.wdt_feed()
        hal.sleep(ms)  # deep sleep: does not return on a board (the next wake reboots)
    return agent
