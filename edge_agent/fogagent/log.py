"""One-line logs: ``W 123456 uplink_failed seq=4 code=5.03``.

Every line at ``level`` or above is printed (the USB REPL: ``mpremote connect PORT repl``);
lines at ``file_level`` or above (default: warnings) are also appended to a file on flash,
which is bounded: when it passes ``max_bytes`` it is renamed to ``<file>.1`` (replacing the
previous one), so at most twice ``max_bytes`` are used. Writing every info line to flash
would cost power and flash wear on every wake. Event names are constant ``noun_verbed``
strings; the data goes in ``key=value`` fields.
"""

import os

LEVELS = {"debug": 10, "info": 20, "warn": 30, "error": 40}
_TAGS = {10: "D", 20: "I", 30: "W", 40: "E"}


class Log:
    def __init__(
        self, clock=None, level="info", path=None, file_level="warn", max_bytes=8192, out=print
    ):
        self.clock = clock  # a function returning ms (the HAL's now_ms)
        self.level = LEVELS[level]
        self.path = path
        self.file_level = LEVELS[file_level]
        self.max_bytes = max_bytes
        self.out = out
        self.lines = 0

    def _emit(self, lvl, event, fields):
        if lvl < self.level and (self.path is None or lvl < self.file_level):
            return
        line = _TAGS[lvl] + " " + str(self.clock() if self.clock else 0) + " " + event
        for k in sorted(fields):
            line += " " + k + "=" + str(fields[k])
        self.lines += 1
        if lvl >= self.level and self.out:
            self.out(line)
        if self.path and lvl >= self.file_level:
            self._write(line)

    def _write(self, line):
        try:
            try:
                big = os.stat(self.path)[6] > self.max_bytes
            except OSError:
                big = False
            if big:
                try:
                    os.remove(self.path + ".1")  # FAT will not rename onto a file
                except OSError:
                    pass
                os.rename(self.path, self.path + ".1")
            with open(self.path, "a") as f:
                f.write(line + "\n")
        except OSError:  # a full or read-only filesystem must not stop the agent
            pass

    def debug(self, event, **fields):
        self._emit(10, event, fields)

    def info(self, event, **fields):
        self._emit(20, event, fields)

    def warn(self, event, **fields):
        self._emit(30, event, fields)

    def error(self, event, **fields):
        self._emit(40, event, fields)
