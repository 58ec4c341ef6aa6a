"""Run the edge agent's test modules (tests/edge/mp) under MicroPython-WASM or CPython.

MicroPython: ``node tests/edge/js/run.mjs`` with the npm package
``@micropython/micropython-webassembly-pyscript`` (pinned in tests/edge/js/package.json;
install with ``npm ci --prefix tests/edge/js``). CPython: the same modules in a child
process. Either way the agent's source, the test modules and a JSON file of inputs are the
only things shared, and the run passes only when the harness printed its sentinel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

EDGE = Path(__file__).resolve().parent
REPO = EDGE.parent.parent
AGENT = REPO / "edge_agent"
MP_TESTS = EDGE / "mp"
JS = EDGE / "js"
RUNNER = JS / "run.mjs"
PACKAGE = JS / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
SENTINEL = "EDGE-SENTINEL-OK"
NPM_CI = "npm ci --prefix tests/edge/js"


def micropython_missing() -> str | None:
    """Why MicroPython-WASM cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (Node.js >= 18 runs the MicroPython WebAssembly port)"
    if not (PACKAGE / "micropython.mjs").is_file():
        return f"the MicroPython WebAssembly npm package is not installed: run `{NPM_CI}`"
    return None


def require_micropython() -> None:
    reason = micropython_missing()
    if reason is not None:
        pytest.skip(reason)


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def lines(self, prefix: str) -> list[str]:
        """The payloads of stdout lines that start with ``prefix`` + a space."""
        return [
            x[len(prefix) + 1 :] for x in self.stdout.splitlines() if x.startswith(prefix + " ")
        ]

    def check(self) -> Run:
        """Assert the harness ran every test and all of them passed."""
        failed = [x for x in self.stdout.splitlines() if x.startswith("FAIL ")]
        summary = re.search(r"edge-tests: (\d+) passed, (\d+) failed", self.stdout)
        assert self.returncode == 0 and not failed and summary, (
            f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )
        assert SENTINEL in self.stdout
        return self


def run(
    module: str,
    inputs: dict[str, Any],
    tmp_path: Path,
    *,
    interpreter: str,
    agent: Path = AGENT,
    heap: int | None = None,
    mounts: tuple[tuple[Path, str], ...] = (),
) -> Run:
    """Run the ``test_*`` functions of ``tests/edge/mp/<module>.py``."""
    data = tmp_path / f"{module}-input.json"
    data.write_text(json.dumps(inputs))
    if interpreter == "micropython":
        require_micropython()
        cmd = ["node", str(RUNNER), "--mount", f"{agent}:/agent", "--mount", f"{MP_TESTS}:/tests"]
        for host, mp in mounts:
            cmd += ["--mount", f"{host}:{mp}"]
        if heap is not None:
            cmd += ["--heap", str(heap)]
        cmd += ["--input", str(data), "--arg", module, "--arg", "/input.json"]
        cmd.append(str(MP_TESTS / "harness.py"))
        env = None
    else:
        cmd = [sys.executable, str(MP_TESTS / "harness.py"), module, str(data)]
        paths = [str(agent), str(MP_TESTS), *(str(h) for h, _ in mounts)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def agent_on_path() -> None:
    """Make ``import fogagent`` work in this process (the agent is not an installed package)."""
    if str(AGENT) not in sys.path:
        sys.path.insert(0, str(AGENT))


def agent_config(store: Path, port: int, **sections: Any) -> dict[str, Any]:
    """A validated agent configuration for tests: device ``edge-1`` posting to
    ``127.0.0.1:port`` /r/room (tests/nodes.py's topology: temp, hum, door)."""
    agent_on_path()
    from fogagent import config

    doc: dict[str, Any] = {
        "device": "edge-1",
        "fog": {"host": "127.0.0.1", "port": port, "source": "room"},
        "wifi": {"ssid": "lab"},
        "sensors": [{"field": "temp", "type": "sht3x_temp"}, {"field": "hum", "type": "sht3x_hum"}],
        "fields": ["temp", "hum", "door"],
        "store": {"dir": str(store)},
        "register": False,
        "log": {"level": "error", "file": None},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    cfg, errors = config.check(doc, "test")
    assert not errors, errors
    result: dict[str, Any] = cfg
    return result
