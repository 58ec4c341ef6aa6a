"""Helpers to run fog nodes in tests: in-process, or as a real `fogrt run` subprocess."""

from __future__ import annotations

import os
import re
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
    """``fogrt run`` in a child process on 127.0.0.1:<ephemeral>; ``port`` from its banner.

    Its stderr goes to a file (a pipe nobody reads would fill up and block the node).
    """

    def __init__(
        self,
        topology: Path,
        state: Path,
        output: Path,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
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
        output.mkdir(parents=True, exist_ok=True)
        self.log_path = output / f"node-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stderr=self._log,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.port = self._wait_for_port()

    @property
    def stderr(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for_port(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r"coap://127\.0\.0\.1:(\d+)", self.stderr)
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError("fogrt run did not start:\n" + self.stderr[-3000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self._log.close()
        return self.proc.returncode
