"""config.json validation: defaults, and one clear ``file: key: message`` per problem."""

import json

from fogagent import config
from harness import tmpdir

GOOD = {
    "device": "esp32-1",
    "fog": {"host": "192.168.1.10", "source": "room"},
    "wifi": {
        "ssid": "lab",
        "psk": "secret",
        "static": {"ip": "192.168.1.50", "gateway": "192.168.1.1"},
    },
    "sensors": [{"field": "temp", "type": "sht3x_temp"}, {"field": "v", "type": "adc", "pin": 34}],
}


def test_defaults_are_filled_in(inputs):
    cfg, errors = config.check(GOOD)
    assert errors == [], errors
    assert cfg["fields"] == ["temp", "v"] and cfg["fog"]["port"] == 5683
    assert cfg["coap"] == {
        "ack_timeout_ms": 2000,
        "ack_random_factor": 1.5,
        "max_retransmit": 4,
        "confirmable": True,
    }
    assert cfg["wifi"]["static"]["mask"] == "255.255.255.0" and cfg["battery"] is None
    assert cfg["sensors"][1]["atten"] == "11db" and cfg["power"]["sleep"] == "deep"


def test_every_problem_is_reported_with_its_path(inputs):
    for doc, expected in inputs["bad"]:
        _, errors = config.check(doc, "board.json")
        assert errors == expected, (doc, errors, expected)


def test_load_reads_a_file_and_refuses_bad_json(inputs):
    d = tmpdir()
    with open(d + "/good.json", "w") as f:
        json.dump(GOOD, f)
    assert config.load(d + "/good.json")["device"] == "esp32-1"
    with open(d + "/bad.json", "w") as f:
        f.write("{not json")
    try:
        config.load(d + "/bad.json")
    except config.ConfigError as e:
        assert e.errors[0].startswith(d + "/bad.json: not valid JSON"), e.errors
    else:
        raise AssertionError("bad JSON accepted")
