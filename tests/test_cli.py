"""The command line: exit codes, graph formats, operator listing, help."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fogrt.cli import main
from fogrt.registry import OPERATORS, _entry_points

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "topologies" / "wsn-events.yaml"


def test_validate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLE)]) == 0
    assert "valid (wsn-events: 1 sources, 3 operators, 2 sinks)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("use: window.tumbling", "use: window.tumbly"))
    assert main(["validate", str(EXAMPLE), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:26:10: operators[1].use: unknown operator 'window.tumbly'" in err


def test_graph_formats(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(EXAMPLE)]) == 0
    text = capsys.readouterr().out
    assert "minute [window.tumbling]" in text and "<- clean" in text
    assert main(["graph", str(EXAMPLE), "--format", "dot"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "wsn-events" {') and '"minute" -> "detect";' in dot
    assert '"detect" -> "anomalies" [label="is_anomaly"];' in dot
    assert main(["graph", str(EXAMPLE), "--format", "mermaid"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR") and '-->|"is_anomaly"|' in mermaid


def test_operators_lists_and_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operators"]) == 0
    out = capsys.readouterr().out
    for name in ("window.tumbling", "learn.anomaly", "preprocess.range_check", "sinks.jsonl"):
        assert name in out
    assert main(["operators", "window.tumbling"]) == 0
    doc = capsys.readouterr().out
    assert "parameters: size, fields=None" in doc and "use: window.tumbling" in doc


def test_replay_of_an_invalid_topology_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: fogrt/v1\n")
    assert main(["replay", str(bad), "--input", "nothing.csv"]) == 2
    assert "missing required key 'kind'" in capsys.readouterr().err


def test_every_command_has_help_with_an_example() -> None:
    for command in ("validate", "graph", "replay", "operators"):
        out = subprocess.run(
            [sys.executable, "-m", "fogrt.cli", command, "--help"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "example" in out, command


def test_third_party_operators_register_through_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A package installed on sys.path with a fogrt.operators entry point, as pip would.
    pkg = tmp_path / "acme_ops"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent('''\
        from fogrt.operator import Operator

        class Double(Operator):
            """Double a field."""
            kind = "acme.double"
            def __init__(self, field: str) -> None:
                self.field = field
            def process(self, event):
                v = event.fields[self.field]
                return (event.replace(fields={**event.fields, self.field: 2 * v}),)
        ''')
    )
    dist = tmp_path / "acme_ops-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ops\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[fogrt.operators]\nacme.double = acme_ops:Double\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    _entry_points.cache_clear()
    try:
        assert "acme.double" in OPERATORS.names()
        topo = tmp_path / "t.yaml"
        topo.write_text(
            textwrap.dedent("""\
            apiVersion: fogrt/v1
            kind: Topology
            metadata: {name: t}
            sources: {s: {fields: {x: float}}}
            operators:
              - {id: d, use: acme.double, from: s, with: {field: x}}
            sinks:
              - {id: out, use: jsonl, from: d, with: {path: out.jsonl}}
            """)
        )
        data = tmp_path / "in.csv"
        data.write_text("x\n1.5\n4\n")
        assert (
            main(
                [
                    "replay",
                    str(topo),
                    "--input",
                    str(data),
                    "--output",
                    str(tmp_path),
                    "--no-progress",
                ]
            )
            == 0
        )
        lines = (tmp_path / "out.jsonl").read_text().splitlines()
        assert [line.split('"x": ')[1].rstrip("}") for line in lines] == ["3.0", "8.0"]
    finally:
        _entry_points.cache_clear()
        OPERATORS._loaded.pop("acme.double", None)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--retry-after", "0"], "--retry-after 0: expected 1..86400 seconds"),
        (["--rcvbuf", "0"], "--rcvbuf 0: expected a positive number of bytes"),
        (["--engines", "0"], "--engines 0: expected 1..64"),
        (["--engines", "65"], "--engines 65: expected 1..64"),
        (["--engines", "2", "--engine", "inline"], "not with --engine inline"),
    ],
)
def test_run_refuses_bad_settings_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    state = tmp_path / "state"
    args = ["run", str(EXAMPLE), "--coap", "127.0.0.1:0", "--state", str(state), *option]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not state.exists(), "nothing was started"
