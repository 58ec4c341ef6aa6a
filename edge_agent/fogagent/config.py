"""``config.json``: the agent's configuration, its defaults and its validation.

The schema is ``SPEC`` below; ``edge_agent/README.md`` documents every key. ``check``
returns the configuration with every default filled in, and every problem as
``file: key.path: message``; ``load`` raises ``ConfigError`` with all of them. The same
code validates on the board (at boot) and on the host (``fogrt edge config``/``flash``).
Unknown keys are errors: a misspelt key would otherwise silently keep its default.
"""

REQUIRED = "<required>"
NULLABLE = "<nullable>"  # last item of a rule whose key may be null although it has a default
MAX_FIELDS = 8  # what the RTC state budget holds with the deepest predictor history
SENSOR_TYPES = ("mcu_temp", "adc", "sht3x_temp", "sht3x_hum")

# key: (kind, default, low, high); kind: "str" "int" "num" "bool", a tuple of choices,
# or a dict (a nested section). Default REQUIRED: must be given; None: may be null (as may
# a key whose rule ends with NULLABLE).
SPEC = {
    "device": ("str", REQUIRED, 1, 64),
    "fog": {
        "host": ("str", REQUIRED, 1, 253),
        "port": ("int", 5683, 1, 65535),
        "source": ("str", REQUIRED, 1, 63),
    },
    "wifi": {
        "ssid": ("str", REQUIRED, 1, 32),
        "psk": ("str", "", 0, 64),
        "timeout_ms": ("int", 8000, 500, 60000),
        "static": (
            {
                "ip": ("str", REQUIRED, 7, 15),
                "mask": ("str", "255.255.255.0", 7, 15),
                "gateway": ("str", REQUIRED, 7, 15),
                "dns": ("str", None, 7, 15),
            },
            None,
        ),
    },
    "sensors": ("sensors", REQUIRED, 1, MAX_FIELDS),
    "fields": ("fields", None, 1, MAX_FIELDS),
    "i2c": {
        "id": ("int", 0, 0, 1),
        "scl": ("int", 22, 0, 48),
        "sda": ("int", 21, 0, 48),
        "freq": ("int", 100000, 10000, 1000000),
        "sht3x_addr": ("int", 0x44, 0x44, 0x45),
    },
    "battery": (
        {
            "pin": ("int", REQUIRED, 0, 48),
            "divider": ("num", 2.0, 1.0, 100.0),
            "capacity_mah": ("int", None, 0, 1000000),
        },
        None,
    ),
    "coap": {
        "ack_timeout_ms": ("int", 2000, 50, 60000),
        "ack_random_factor": ("num", 1.5, 1.0, 4.0),
        "max_retransmit": ("int", 4, 0, 10),
        "confirmable": ("bool", True),
    },
    "power": {
        "sleep": (("deep", "light"), "deep"),
        "max_awake_ms": ("int", 10000, 1000, 300000),
        "watchdog": ("bool", True),
        "backoff_base_s": ("int", 30, 1, 86400),
        "backoff_max_s": ("int", 3600, 1, 604800),
        "boot_grace_ms": ("int", 3000, 0, 60000),
        "safe_pin": ("int", 0, 0, 48),
    },
    "store": {
        "dir": ("str", "", 0, 255),
        "max_bytes": ("int", 16384, 512, 1 << 20),
        "max_readings": ("int", 1024, 1, 65535),
        "max_per_uplink": ("int", 32, 1, 256),
    },
    "register": ("bool", True),
    "ntp": ("str", None, 1, 253),
    "log": {
        "level": (("debug", "info", "warn", "error"), "info"),
        "file": ("str", "fogagent.log", 1, 64, NULLABLE),  # null: no log file
        "file_level": (("debug", "info", "warn", "error"), "warn"),
        "max_bytes": ("int", 8192, 512, 1 << 20),
    },
}
SENSOR_SPEC = {
    "field": ("str", REQUIRED, 1, 63),
    "type": (SENSOR_TYPES, REQUIRED),
    "pin": ("int", None, 0, 48),
    "atten": (("0db", "2.5db", "6db", "11db"), "11db"),
    "scale": ("num", 1.0, -1e9, 1e9),
    "offset": ("num", 0.0, -1e9, 1e9),
    "samples": ("int", 4, 1, 64),
}


class ConfigError(ValueError):
    """``errors``: one ``file: key.path: message`` per problem."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("\n".join(errors))


def _type(v):
    if v is None:
        return "null"
    if v is True or v is False:
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "str"
    return "array" if isinstance(v, list) else "object"


def _name_ok(s):
    """An identifier, as a topology's field names are."""
    if not s or not (s[0].isalpha() or s[0] == "_"):
        return False
    for ch in s:
        if not (ch.isalpha() or ch.isdigit() or ch == "_") or ord(ch) > 127:
            return False
    return True


def _device_ok(s):
    for ch in s:
        if not (ch.isalpha() or ch.isdigit() or ch in "_.:-") or ord(ch) > 127:
            return False
    return True


def _ipv4_ok(s):
    parts = s.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)


class _Checker:
    def __init__(self, name):
        self.name = name
        self.errors = []

    def bad(self, path, message):
        self.errors.append(self.name + ": " + path + ": " + message)

    def section(self, doc, spec, path):
        out = {}
        if not isinstance(doc, dict):
            self.bad(path or "(top)", "expected object, got " + _type(doc))
            doc = {}
        for k in doc:
            if k not in spec:
                self.bad((path + "." if path else "") + str(k), "unknown key")
        for k in spec:
            out[k] = self.value(doc.get(k), spec[k], (path + "." if path else "") + k, k in doc)
        return out

    def value(self, v, rule, path, given):
        if isinstance(rule, dict):
            return self.section(v if given else {}, rule, path)
        kind, default = rule[0], rule[1]
        if not given or v is None:
            if default is REQUIRED:
                self.bad(path, "required")
            elif v is None and given and default is not None and rule[-1] != NULLABLE:
                self.bad(
                    path,
                    "expected "
                    + (kind if isinstance(kind, str) else "one of " + "|".join(kind))
                    + ", got null",
                )
            return None if default is REQUIRED or isinstance(kind, dict) else default
        if isinstance(kind, dict):
            return self.section(v, kind, path)
        if isinstance(kind, tuple):
            if v not in kind:
                self.bad(path, "expected one of " + "|".join(kind) + ", got " + repr(v))
            return v
        if kind == "bool":
            if v is not True and v is not False:
                self.bad(path, "expected bool, got " + _type(v))
            return v
        if kind == "sensors":
            return self.sensors(v, path, rule[2], rule[3])
        if kind == "fields":
            return self.names(v, path, rule[2], rule[3])
        lo, hi = rule[2], rule[3]
        if kind == "str":
            if not isinstance(v, str):
                self.bad(path, "expected str, got " + _type(v))
            elif not lo <= len(v) <= hi:
                self.bad(path, "expected %d..%d characters, got %d" % (lo, hi, len(v)))
            return v
        ok = isinstance(v, int) if kind == "int" else isinstance(v, (int, float))
        if v is True or v is False or not ok:
            self.bad(path, "expected " + kind + ", got " + _type(v))
        elif not lo <= v <= hi:
            self.bad(path, "%r out of range %r..%r" % (v, lo, hi))
        return float(v) if kind == "num" and ok else v

    def names(self, v, path, lo, hi):
        if not isinstance(v, list):
            self.bad(path, "expected array, got " + _type(v))
            return []
        if not lo <= len(v) <= hi:
            self.bad(path, "expected %d..%d names, got %d" % (lo, hi, len(v)))
        for i, x in enumerate(v):
            if not isinstance(x, str) or not _name_ok(x):
                self.bad("%s[%d]" % (path, i), "expected an identifier, got " + repr(x))
        if len(set(v if all(isinstance(x, str) for x in v) else [])) != len(v):
            self.bad(path, "duplicate names")
        return v

    def sensors(self, v, path, lo, hi):
        if not isinstance(v, list):
            self.bad(path, "expected array, got " + _type(v))
            return []
        if not lo <= len(v) <= hi:
            self.bad(path, "expected %d..%d sensors, got %d" % (lo, hi, len(v)))
        out = []
        for i, s in enumerate(v):
            p = "%s[%d]" % (path, i)
            s = self.section(s, SENSOR_SPEC, p)
            if s["type"] == "adc" and s["pin"] is None:
                self.bad(p + ".pin", "required for an adc sensor")
            if isinstance(s["field"], str) and not _name_ok(s["field"]):
                self.bad(p + ".field", "expected an identifier, got " + repr(s["field"]))
            out.append(s)
        return out


def check(doc, name="config.json"):
    """``(config with defaults, [errors])``; the errors sorted by key path."""
    c = _Checker(name)
    if not isinstance(doc, dict):
        return None, [name + ": expected a JSON object at the top, got " + _type(doc)]
    cfg = c.section(doc, SPEC, "")
    _cross_checks(c, cfg)
    # Sorted: MicroPython's dicts do not keep SPEC's order, and both sides must agree.
    return cfg, sorted(c.errors)


def _cross_checks(c, cfg):
    """Rules that span keys; each runs only when the keys it reads have the right type."""
    if isinstance(cfg["device"], str) and not _device_ok(cfg["device"]):
        c.bad("device", "invalid device id (1..64 of A-Z a-z 0-9 _ . : -)")
    source = cfg["fog"]["source"]
    if isinstance(source, str) and not _name_ok(source):
        c.bad("fog.source", "expected an identifier (the topology's source id)")
    st = cfg["wifi"]["static"]
    if st:
        for k in ("ip", "mask", "gateway", "dns"):
            if isinstance(st[k], str) and not _ipv4_ok(st[k]):
                c.bad("wifi.static." + k, "expected a dotted IPv4 address, got " + repr(st[k]))
    if c.errors:
        return  # the rest needs a well-formed configuration
    names = [s["field"] for s in cfg["sensors"]]
    if len(set(names)) != len(names):
        c.bad("sensors", "two sensors write the same field")
    if cfg["fields"] is None:
        cfg["fields"] = names
    else:
        for i, n in enumerate(names):
            if n not in cfg["fields"]:
                c.bad("sensors[%d].field" % i, repr(n) + " is not in fields")
    p = cfg["power"]
    if p["backoff_max_s"] < p["backoff_base_s"]:
        c.bad("power.backoff_max_s", "must be >= power.backoff_base_s")
    # Every uplink must fit one datagram under the fog's 4096-byte body limit, even with
    # 9-byte values: keep max_per_uplink * (reading bytes) within it.
    per = 12 + 9 * len(cfg["fields"])
    if cfg["store"]["max_per_uplink"] * per + 96 > 4096:
        c.bad(
            "store.max_per_uplink",
            "at most %d readings of %d fields fit a 4096-byte uplink"
            % ((4096 - 96) // per, len(cfg["fields"])),
        )


def load(path="config.json"):
    """The validated configuration in ``path``; raises ConfigError."""
    import json

    try:
        with open(path) as f:
            doc = json.load(f)
    except OSError:
        raise ConfigError([path + ": cannot read the file"]) from None
    except ValueError as e:
        raise ConfigError([path + ": not valid JSON (" + str(e) + ")"]) from None
    cfg, errors = check(doc, path)
    if errors:
        raise ConfigError(errors)
    return cfg
