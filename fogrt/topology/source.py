"""Safe YAML loading that remembers where every value came from.

``load_yaml`` composes the document with PyYAML's ``SafeLoader`` (no Python tags, no
arbitrary objects), refuses duplicate keys and non-string keys, bounds alias expansion
(the "billion laughs" document), and returns plain data plus a :class:`Positions` map from
each field path to its line and column, which is how every error can name them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from fogrt.errors import TopologyError

Path = tuple[str | int, ...]

_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("map", "seq", "str", "int", "float", "bool", "null")
)

MAX_NODES = 100_000
"""Upper bound on the number of YAML nodes built, aliases expanded (a topology is small)."""


@dataclass
class Positions:
    """Field path -> (line, column), 1-based, for values and for mapping keys."""

    file: str
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Path, *, key: bool = False) -> tuple[int | None, int | None]:
        """The position of ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        if key and probe in self.keys:
            return self.keys[probe]
        while probe:
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), (None, None))

    def error(
        self, path: Path, message: str, *, key: bool = False, hint: str | None = None
    ) -> TopologyError:
        line, column = self.locate(path, key=key)
        return TopologyError(
            message, file=self.file, line=line, column=column, path=path, hint=hint
        )


def load_yaml(text: str, file: str = "<topology>") -> tuple[Any, Positions]:
    """Parse one YAML document safely; return ``(data, positions)``."""
    pos = Positions(file)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = exc.problem or exc.context or "invalid YAML"
        raise TopologyError(
            f"YAML syntax error: {problem}", file=file, line=line, column=col
        ) from None
    except yaml.YAMLError as exc:
        raise TopologyError(f"YAML syntax error: {exc}", file=file) from None
    finally:
        loader.dispose()
    if root is None:
        raise TopologyError(
            "the file is empty; expected a Topology document", file=file, line=1, column=1
        )
    budget = [MAX_NODES]
    data = _build(loader, root, (), pos, budget, set())
    return data, pos


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    pos: Positions,
    budget: list[int],
    active: set[int],
) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise pos.error(
            path, f"document too large (more than {MAX_NODES} values after expanding aliases)"
        )
    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if node.tag not in _PLAIN_TAGS:
        raise pos.error(
            path,
            f"YAML tag {node.tag!r} is not allowed in a topology; "
            "expected plain mappings, lists, strings, numbers and booleans",
        )
    if id(node) in active:
        raise pos.error(path, "recursive YAML alias: a value that contains itself")
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        active.add(id(node))
        try:
            return _build_collection(loader, node, path, pos, budget, active)
        finally:
            active.discard(id(node))
    return loader.construct_object(node, deep=True)


def _build_collection(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    pos: Positions,
    budget: list[int],
    active: set[int],
) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            key_pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            if not isinstance(key, str):
                pos.values[(*path, str(key))] = key_pos
                raise pos.error(
                    (*path, str(key)),
                    f"mapping keys must be strings, got {type(key).__name__} {key!r}",
                )
            if key in out:
                pos.values[(*path, key)] = key_pos
                first = pos.keys[(*path, key)]
                raise pos.error(
                    (*path, key), f"duplicate key {key!r} (first defined at line {first[0]})"
                )
            pos.keys[(*path, key)] = key_pos
            out[key] = _build(loader, value_node, (*path, key), pos, budget, active)
        return out
    return [
        _build(loader, item, (*path, i), pos, budget, active) for i, item in enumerate(node.value)
    ]
