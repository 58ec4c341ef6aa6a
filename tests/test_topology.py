"""Topology validation: every problem names file, line, column, field and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fogrt.errors import TopologyError, TopologyErrors
from fogrt.topology import compile_topology, load_topology

REPO = Path(__file__).resolve().parent.parent

VALID = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: pump}
sources:
  pump:
    fields: {temp: float, vib: float, mode: str}
operators:
  - id: clean
    use: preprocess.range_check
    from: pump
    with: {limits: {temp: [-40, 125]}, action: "null"}
  - id: feats
    use: window.tumbling
    from: clean
    with: {size: 10s, fields: [temp, vib]}
  - id: detect
    use: learn.anomaly
    from: feats
    with: {fields: [temp_mean, vib_mean], threshold: {quantile: 0.99}}
sinks:
  - {id: alerts, use: jsonl, from: detect, where: "is_anomaly", with: {path: a.jsonl}}
"""


def problems(text: str) -> list[str]:
    """Every rendered problem of a topology text (it must be invalid)."""
    with pytest.raises((TopologyError, TopologyErrors)) as info:
        compile_topology(textwrap.dedent(text), "t.yaml")
    exc = info.value
    errors = exc.errors if isinstance(exc, TopologyErrors) else [exc]
    return [e.render() for e in errors]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_valid_topology_compiles_in_topological_order() -> None:
    t = compile_topology(VALID, "t.yaml")
    assert [n.id for n in t.nodes] == ["pump", "clean", "feats", "detect", "alerts"]
    assert [n.role for n in t.nodes] == ["source", "operator", "operator", "operator", "sink"]
    assert t.node("pump").coap == "/r/pump"
    assert t.node("feats").schema["temp_mean"] == "float"
    assert t.node("detect").schema["is_anomaly"] == "bool"
    assert t.children("clean") == ("feats",)
    assert t.node("alerts").where is not None


def test_yaml_syntax_error_points_at_the_problem() -> None:
    text = VALID.replace(
        "with: {size: 10s, fields: [temp, vib]}", "with: {size: 10s, fields: [temp"
    )
    assert one_problem(text).startswith(
        "t.yaml:16:7: YAML syntax error: expected ',' or ']', but got ':'"
    )


def test_duplicate_yaml_key() -> None:
    text = VALID.replace("kind: Topology\n", "kind: Topology\nkind: Topology\n")
    assert one_problem(text) == "t.yaml:3:1: kind: duplicate key 'kind' (first defined at line 2)"


def test_python_tags_are_refused() -> None:
    text = VALID.replace("metadata: {name: pump}", "metadata: !!python/object:os.system {}")
    assert one_problem(text) == (
        "t.yaml:3:11: metadata: YAML tag 'tag:yaml.org,2002:python/object:os.system' is not "
        "allowed in a topology; expected plain mappings, lists, strings, numbers and booleans"
    )


def test_empty_file() -> None:
    assert one_problem("") == "t.yaml:1:1: the file is empty; expected a Topology document"


def test_wrong_api_version() -> None:
    text = VALID.replace("fogrt/v1", "fogrt/v2")
    assert (
        one_problem(text) == "t.yaml:1:13: apiVersion: Input should be 'fogrt/v1', got 'fogrt/v2'"
    )


def test_unknown_top_level_key_suggests() -> None:
    text = VALID.replace("sinks:\n", "sink:\n")
    found = problems(text)
    assert "t.yaml:20:1: sink: unknown key 'sink' (did you mean 'sinks'?)" in found


def test_unknown_operator_key_suggests_from() -> None:
    text = VALID.replace("    from: clean\n", "    form: clean\n")
    assert problems(text) == [
        "t.yaml:12:5: operators[1].from: missing required key 'from' (expected keys: id, use, "
        "from, with, where, key)",
        "t.yaml:14:5: operators[1].form: unknown key 'form' (did you mean 'from'?)",
    ]


def test_bad_field_type_short_form() -> None:
    text = VALID.replace("temp: float, vib", "temp: flot, vib")
    assert one_problem(text) == (
        "t.yaml:6:20: sources.pump.fields.temp: Input should be 'float', 'int', 'bool' or "
        "'str', got 'flot'"
    )


def test_missing_metadata() -> None:
    text = VALID.replace("metadata: {name: pump}\n", "")
    assert one_problem(text) == (
        "t.yaml:1:1: metadata: missing required key 'metadata' (expected keys: apiVersion, kind, "
        "metadata, sources, operators, sinks, control, state)"
    )


def test_duplicate_ids() -> None:
    text = VALID.replace("- id: feats", "- id: clean").replace("from: feats", "from: clean")
    assert "t.yaml:12:9: operators[1].id: duplicate id 'clean' (already used at line 8)" in (
        problems(text)
    )


def test_dangling_from_suggests() -> None:
    text = VALID.replace("from: clean", "from: cleen")
    assert one_problem(text) == (
        "t.yaml:14:11: operators[1].from: unknown source or operator 'cleen' "
        "(did you mean 'clean'?)"
    )


def test_cycle_is_named() -> None:
    text = VALID.replace("    from: pump\n", "    from: detect\n")
    assert one_problem(text) == (
        "t.yaml:10:11: operators[0].from: cycle: clean -> detect -> feats -> clean (a topology "
        "is a DAG: no operator may depend on its own output)"
    )


def test_reading_from_a_sink() -> None:
    text = VALID + "  - {id: again, use: stdout, from: alerts}\n"
    assert one_problem(text) == (
        "t.yaml:22:36: sinks[1].from: 'alerts' is a sink; sinks have no output to read from"
    )


def test_unknown_operator_suggests() -> None:
    text = VALID.replace("use: window.tumbling", "use: window.tumbing")
    assert one_problem(text).startswith(
        "t.yaml:13:10: operators[1].use: unknown operator 'window.tumbing' "
        "(did you mean 'window.tumbling'"
    )


def test_unknown_sink_suggests() -> None:
    text = VALID.replace("use: jsonl", "use: jsnl")
    assert one_problem(text) == (
        "t.yaml:21:23: sinks[0].use: unknown sink 'jsnl' (did you mean 'jsonl'?)"
    )


def test_unknown_parameter_suggests() -> None:
    text = VALID.replace("{size: 10s, fields", "{sise: 10s, fields")
    found = one_problem(text)
    assert found.startswith(
        "t.yaml:15:12: operators[1].with.sise: unknown parameter 'sise' (did you mean 'size'?)"
    )
    assert "window.tumbling takes: size, fields=None" in found


def test_missing_required_parameter() -> None:
    text = VALID.replace("{size: 10s, fields: [temp, vib]}", "{fields: [temp, vib]}")
    assert one_problem(text).startswith(
        "t.yaml:15:11: operators[1].with.size: required parameter of window.tumbling"
    )


def test_parameter_of_the_wrong_type() -> None:
    text = VALID.replace("size: 10s", "size: ten seconds")
    assert one_problem(text).startswith(
        "t.yaml:15:18: operators[1].with.size: expected a duration such as 10s, 500ms, 5m or "
        "1h, got 'ten seconds'"
    )


def test_parameter_rejected_by_constructor() -> None:
    text = VALID.replace("temp: [-40, 125]", "temp: [125, -40]")
    assert one_problem(text).startswith("t.yaml:11:27: operators[0].with.limits.temp: ")


def test_field_not_produced_upstream_in_params() -> None:
    text = VALID.replace("fields: [temp, vib]}", "fields: [tmp, vib]}")
    assert one_problem(text) == (
        "t.yaml:15:32: operators[1].with.fields[0]: unknown field 'tmp' (did you mean 'temp'?)"
    )


def test_field_consumed_by_a_window_is_gone_downstream() -> None:
    text = VALID.replace("fields: [temp_mean, vib_mean]", "fields: [temp, vib_mean]")
    assert one_problem(text) == (
        "t.yaml:19:21: operators[2].with.fields[0]: unknown field 'temp' (did you mean "
        "'temp_std' or 'temp_min' or 'temp_max'?)"
    )


def test_non_numeric_field_for_a_numeric_operator() -> None:
    text = VALID.replace("fields: [temp, vib]}", "fields: [temp, mode]}")
    assert one_problem(text) == (
        "t.yaml:15:38: operators[1].with.fields[1]: field 'mode' is str, expected a number"
    )


def test_where_names_unknown_field() -> None:
    text = VALID.replace('where: "is_anomaly"', 'where: "is_anomly"')
    assert one_problem(text).startswith(
        "t.yaml:21:51: sinks[0].where: unknown field 'is_anomly' (did you mean 'is_anomaly'?) "
        "(fields reaching 'alerts': temp_mean, temp_std, temp_min, temp_max, vib_mean, vib_std, "
        "vib_min, vib_max, score, is_anomaly)"
    )


def test_where_with_unsafe_expression() -> None:
    text = VALID.replace('where: "is_anomaly"', "where: \"__import__('os').system('x')\"")
    found = one_problem(text)
    assert found == (
        "t.yaml:21:51: sinks[0].where: invalid expression: attribute access is not allowed "
        "(at character 17)"
    )


def test_key_must_be_device_global_or_a_field() -> None:
    text = VALID.replace("    from: feats\n", "    from: feats\n    key: devise\n")
    assert one_problem(text) == (
        "t.yaml:19:10: operators[2].key: expected 'device', 'global' or a field name, got "
        "'devise' (did you mean 'device'?)"
    )


def test_redis_state_needs_a_url() -> None:
    text = VALID + "state: {backend: redis}\n"
    assert one_problem(text) == (
        "t.yaml:22:8: state: backend redis needs url (e.g. redis://host:6379/0; credentials "
        "come from the environment, never from the topology)"
    )


def test_several_problems_are_reported_together() -> None:
    text = VALID.replace("from: clean", "from: nowhere").replace("use: jsonl", "use: nope")
    assert problems(text) == [
        "t.yaml:14:11: operators[1].from: unknown source or operator 'nowhere'; expected one of: "
        "clean, detect, feats, pump",
        "t.yaml:21:23: sinks[0].use: unknown sink 'nope'; expected one of: csv, jsonl, stdout",
    ]


def test_missing_file() -> None:
    with pytest.raises(TopologyError, match=r"nope\.yaml: file not found"):
        load_topology("nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "topologies").glob("*.yaml")), ids=str)
def test_example_topologies_are_valid(path: Path) -> None:
    topology = load_topology(path)
    assert topology.by_role("sink"), "every example writes something"


def test_control_policy_is_checked() -> None:
    text = VALID + "control:\n  policy: {use: policy.fixd, with: {interval: 30s}}\n"
    assert one_problem(text) == (
        "t.yaml:23:17: control.policy.use: unknown policy 'policy.fixd' (did you mean "
        "'policy.fixed' or 'policy.bandit' or 'policy.burst'?)"
    )
    text = VALID + "control:\n  policy: {use: policy.fixed, with: {interval: 0.1s}}\n"
    assert one_problem(text) == (
        "t.yaml:23:48: control.policy.with.interval: expected an interval between 1s and 7d, "
        "got 0.1"
    )


def test_redis_url_must_not_carry_credentials() -> None:
    text = VALID + "state: {backend: redis, url: 'redis://admin:secret@db:6379/0'}\n"
    assert one_problem(text) == (
        "t.yaml:22:8: state: credentials do not go in the URL: set FOGRT_REDIS_USERNAME and "
        "FOGRT_REDIS_PASSWORD in the environment"
    )
