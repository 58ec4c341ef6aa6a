"""The README's examples stay true."""

from __future__ import annotations

import re
from pathlib import Path

from fogrt.ingest.wire import UplinkDecoder, encode_uplink

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_uplink_hex_dump_is_what_the_encoder_writes() -> None:
    block = README.split("one reading of a `{temperature, humidity, label}` source:")[1]
    block = block.split("```")[1]
    hex_bytes = []
    for line in block.splitlines():  # each line: hex bytes first, then a comment
        for token in line.split():
            if not re.fullmatch(r"[0-9a-f]{2}", token):
                break
            hex_bytes.append(token)
    dumped = bytes.fromhex("".join(hex_bytes))
    fields = ["temperature", "humidity", "label"]
    expected = encode_uplink(
        "m1",
        3,
        42,
        [(0.0, {"temperature": 21.5, "humidity": 40.0, "label": 0})],
        control_version=1,
        battery_mv=3000,
        positional_fields=fields,
    )
    assert dumped == expected
    up = UplinkDecoder({"temperature": "float", "humidity": "float", "label": "int"}).decode(dumped)
    assert (up.device, up.boot, up.seq, up.battery_mv) == ("m1", 3, 42, 3000)


def test_first_command_is_the_one_the_tests_run() -> None:
    first = README.split("```sh\n")[1].split("\n```")[0]
    assert first.startswith("pip install . && fogrt replay topologies/wsn-events.yaml")
    assert "--input topologies/data/lwsndr_single_hop.csv.gz --key-column mote_id" in first
