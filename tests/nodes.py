"""Helpers to run fog nodes in tests: in-process, or as a real `fogrt run` subprocess."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

TOPOLOGY = textwrap.dedent("""\
    apiVersion: fogrt/v1
    kind: Topology
    metadata: {name: node-test}
    sources:
      room: {coap: /r/room, fields: {temp: float, hum: float, door: bool}}
    operators:
      - {id: hot, use: transform.compute, from: room, with: {fields: {hot: "temp > 30"}}}
    sinks:
      - {id: raw, use: jsonl, from: room, with: {path: raw.jsonl}}
      - {id: alerts, use: jsonl, from: hot, where: "hot", with: {path: hot.jsonl}}
    control:
      policy: {use: policy.fixed, with: {interval: 30s}}
    """)


class NodeProcess:
    """``fogrt run`` in a child process on 127.0.0.1:<ephemeral>; ``port`` from its banner."""

    def __init__(self, topology: Path, state: Path, output: Path, *extra: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "fogrt.cli",
            "--log-format",
            "json",
            "run",
            str(topology),
            "--coap",
            "127.0.0.1:0",
            "--state",
            str(state),
            "--output",
            str(output),
            *extra,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stderr: list[str] = []
        self.port = self._wait_for_port()

    def _wait_for_port(self, timeout: float = 30.0) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stderr.fileno()
        buf = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                m = re.search(rb"coap://127\.0\.0\.1:(\d+)", buf)
                if m:
                    self.stderr.append(buf.decode(errors="replace"))
                    return int(m.group(1))
        self.kill()
        raise RuntimeError("fogrt run did not start:\n" + buf.decode(errors="replace"))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.stderr.append(err.decode(errors="replace") if err else "")
        return self.proc.returncode
