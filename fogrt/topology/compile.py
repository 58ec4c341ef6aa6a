"""Topology file -> validated, compiled graph, or every problem with file:line:column:field.

Checks, in order: YAML (safe, positioned), structure (pydantic), ids unique, ``from``
references that exist, no cycles, ``use`` names in the registries, parameters that fit the
operator's constructor, ``where``/``key`` against the fields that reach the node, and each
operator's own field checks (``Operator.schema``). Nothing runs until all of that passes.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic

from fogrt.errors import ExpressionError, FieldError, ParamError, TopologyError, TopologyErrors
from fogrt.expr import Expr, compile_expr
from fogrt.operator import unknown_name_message, validate_params
from fogrt.registry import OPERATORS, SINKS, UnknownNameError
from fogrt.topology.control import CompiledControl, check_alerts, compile_control
from fogrt.topology.model import FIELD, Node, Topology
from fogrt.topology.source import Path as FieldPath
from fogrt.topology.source import Positions, load_yaml
from fogrt.types import FieldType

Role = Literal["source", "operator", "sink"]


@dataclass(frozen=True)
class CompiledNode:
    """One vertex of the graph, with everything the engine needs to instantiate it."""

    id: str
    role: Role
    use: str
    cls: type[Any] | None
    params: Mapping[str, Any]
    inputs: tuple[str, ...]
    where: Expr | None
    key: str
    schema: Mapping[str, FieldType]
    """Fields this node emits (for a sink: the fields it receives)."""
    input_schema: Mapping[str, FieldType] = field(default_factory=dict)
    """Fields that reach this node (empty for a source)."""
    coap: str | None = None

    def build(self) -> Any:
        """A fresh operator (bound to its input) or sink; params are already validated."""
        assert self.cls is not None, "sources are not built"
        instance = self.cls(**self.params)
        if self.role == "operator":
            instance.bind(self.input_schema)
        return instance


@dataclass(frozen=True)
class CompiledTopology:
    """A validated topology: nodes in topological order (sources first)."""

    name: str
    file: str
    spec: Topology
    nodes: tuple[CompiledNode, ...]
    _children: Mapping[str, tuple[str, ...]] = field(repr=False)
    control: CompiledControl | None = None
    """The control loop's policies (``control:``); None: devices keep their defaults."""

    def node(self, node_id: str) -> CompiledNode:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def children(self, node_id: str) -> tuple[str, ...]:
        return self._children.get(node_id, ())

    def by_role(self, role: Role) -> list[CompiledNode]:
        return [n for n in self.nodes if n.role == role]


def load_topology(path: str | Path) -> CompiledTopology:
    """Read and compile a topology file. Raises TopologyError / TopologyErrors."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TopologyError("file not found", file=name) from None
    except UnicodeDecodeError as exc:
        raise TopologyError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=name
        ) from None
    except OSError as exc:
        raise TopologyError(f"cannot read: {exc.strerror}", file=name) from None
    return compile_topology(text, name)


def compile_topology(text: str, file: str = "<topology>") -> CompiledTopology:
    """Compile topology text. Raises TopologyError (one problem) or TopologyErrors."""
    data, pos = load_yaml(text, file)
    if not isinstance(data, dict):
        raise pos.error(
            (),
            f"expected a mapping with apiVersion, kind, metadata, sources, "
            f"operators; got {type(data).__name__}",
        )
    try:
        spec = Topology.model_validate(data)
    except pydantic.ValidationError as exc:
        _raise([_from_pydantic(err, data, pos) for err in exc.errors()])
    return _Compiler(spec, pos).run()


def _raise(errors: list[TopologyError]) -> typing.NoReturn:
    if len(errors) == 1:
        raise errors[0]
    raise TopologyErrors(errors)


# -- structural errors ------------------------------------------------------------------------


def _from_pydantic(err: Mapping[str, Any], data: Any, pos: Positions) -> TopologyError:
    loc: FieldPath = tuple(p for p in err["loc"] if isinstance(p, str | int))
    # `temp: float` is the short form of `temp: {type: float}`: point at what was written.
    if loc and loc[-1] == "type" and loc[:-1] in pos.values and loc not in pos.values:
        loc = loc[:-1]
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1])
        return pos.error(loc, unknown_name_message("key", key, allowed), key=True)
    if kind == "missing":
        return pos.error(
            loc,
            f"missing required key {loc[-1]!r}",
            hint=f"expected keys: {', '.join(_allowed_keys(loc[:-1]))}",
        )
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind not in ("value_error", "model_type", "dict_type", "list_type"):
        msg += f", got {_show(err.get('input'))}"
    elif kind in ("model_type", "dict_type", "list_type"):
        msg += f", got {type(err.get('input')).__name__} {_show(err.get('input'))}"
    return pos.error(loc, msg)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _allowed_keys(loc: FieldPath) -> list[str]:
    """The keys a mapping at ``loc`` may have, following the model's annotations."""
    ann: Any = Topology
    for part in loc:
        ann = _unwrap(ann)
        if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
            fields = {f.alias or n: f for n, f in ann.model_fields.items()}
            if part not in fields:
                return []
            ann = fields[str(part)].annotation
        elif typing.get_origin(ann) in (dict, list):
            ann = typing.get_args(ann)[-1]
        else:
            return []
    ann = _unwrap(ann)
    if isinstance(ann, type) and issubclass(ann, pydantic.BaseModel):
        return [f.alias or n for n, f in ann.model_fields.items()]
    return []


def _unwrap(ann: Any) -> Any:
    while True:
        origin = typing.get_origin(ann)
        if origin is typing.Annotated:
            ann = typing.get_args(ann)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            ann = args[0]
        else:
            return ann


# -- semantic checks -------------------------------------------------------------------------


class _Compiler:
    def __init__(self, spec: Topology, pos: Positions) -> None:
        self.spec = spec
        self.pos = pos
        self.errors: list[TopologyError] = []
        self.nodes: dict[str, CompiledNode] = {}

    def error(
        self, path: FieldPath, message: str, *, key: bool = False, hint: str | None = None
    ) -> None:
        self.errors.append(self.pos.error(path, message, key=key, hint=hint))

    def run(self) -> CompiledTopology:
        spec = self.spec
        # Entries of `operators:` whose `use` is a sink are sinks; both lists keep their paths.
        ops: list[tuple[FieldPath, Node]] = []
        sinks: list[tuple[FieldPath, Node]] = []
        for i, n in enumerate(spec.operators):
            (sinks if _sink_name(n.use) in SINKS else ops).append((("operators", i), n))
        for i, n in enumerate(spec.sinks):
            sinks.append((("sinks", i), n))

        schemas = {sid: {n: f.type for n, f in s.fields.items()} for sid, s in spec.sources.items()}
        control = compile_control(spec, schemas, self.error)
        declared = self._declare_ids(ops, sinks)
        order = self._order(ops, sinks, declared)
        classes = self._resolve(ops, sinks)
        if self.errors:
            _raise(self.errors)

        for sid, src in spec.sources.items():
            schema = {name: f.type for name, f in src.fields.items()}
            self.nodes[sid] = CompiledNode(
                sid,
                "source",
                "source",
                None,
                {},
                (),
                None,
                "device",
                schema,
                coap=src.coap or f"/r/{sid}",
            )
        by_id = {n.id: (path, n) for path, n in ops + sinks}
        sink_ids = {n.id for _, n in sinks}
        for nid in order:
            path, n = by_id[nid]
            self._node(path, n, "sink" if nid in sink_ids else "operator", classes[nid])
        if control is not None:
            outputs = {n.id: n.schema for n in self.nodes.values() if n.role == "operator"}
            check_alerts(control, outputs, self.error)
        if self.errors:
            _raise(self.errors)

        children: dict[str, list[str]] = {}
        for node in self.nodes.values():
            for parent in node.inputs:
                children.setdefault(parent, []).append(node.id)
        ordered = [self.nodes[s] for s in spec.sources] + [self.nodes[i] for i in order]
        return CompiledTopology(
            spec.metadata.name,
            self.pos.file,
            spec,
            tuple(ordered),
            {k: tuple(v) for k, v in children.items()},
            control,
        )

    def _declare_ids(
        self, ops: list[tuple[FieldPath, Node]], sinks: list[tuple[FieldPath, Node]]
    ) -> dict[str, FieldPath]:
        declared: dict[str, FieldPath] = {sid: ("sources", sid) for sid in self.spec.sources}
        for path, n in ops + sinks:
            if n.id in declared:
                first = declared[n.id]
                line = self.pos.locate(first, key=first[0] == "sources")[0]
                self.error((*path, "id"), f"duplicate id {n.id!r} (already used at line {line})")
            else:
                declared[n.id] = path
        return declared

    def _order(
        self,
        ops: list[tuple[FieldPath, Node]],
        sinks: list[tuple[FieldPath, Node]],
        declared: dict[str, FieldPath],
    ) -> list[str]:
        """Operators and sinks in topological order; dangling refs and cycles are errors."""
        sink_ids = {n.id for _, n in sinks}
        deps: dict[str, list[str]] = {}
        for path, n in ops + sinks:
            deps[n.id] = []
            for j, parent in enumerate(n.from_):
                where = (*path, "from", j) if len(n.from_) > 1 else (*path, "from")
                if parent == n.id:
                    self.error(where, f"{n.id!r} cannot read from itself")
                elif parent in sink_ids:
                    self.error(where, f"{parent!r} is a sink; sinks have no output to read from")
                elif parent not in declared:
                    self.error(
                        where,
                        unknown_name_message(
                            "source or operator", parent, [d for d in declared if d not in sink_ids]
                        ),
                    )
                elif parent not in self.spec.sources:
                    deps[n.id].append(parent)
        # Kahn's algorithm, keeping file order among ready nodes (stable, deterministic).
        remaining = {k: set(v) for k, v in deps.items()}
        order: list[str] = []
        while True:
            ready = [k for k, v in remaining.items() if not v]
            if not ready:
                break
            for k in ready:
                order.append(k)
                del remaining[k]
            for v in remaining.values():
                v.difference_update(ready)
        if remaining:
            cycle = _find_cycle({k: deps[k] for k in remaining})
            path = dict((n.id, p) for p, n in ops + sinks)[cycle[0]]
            self.error(
                (*path, "from"),
                "cycle: " + " -> ".join([*cycle, cycle[0]]),
                hint="a topology is a DAG: no operator may depend on its own output",
            )
        return order

    def _resolve(
        self, ops: list[tuple[FieldPath, Node]], sinks: list[tuple[FieldPath, Node]]
    ) -> dict[str, type[Any]]:
        """The class behind every ``use:``; unknown names are errors with suggestions."""
        classes: dict[str, type[Any]] = {}
        for role, nodes in (("operator", ops), ("sink", sinks)):
            for path, n in nodes:
                try:
                    if role == "sink":
                        classes[n.id] = SINKS.get(_sink_name(n.use))
                    else:
                        classes[n.id] = OPERATORS.get(n.use)
                except UnknownNameError as exc:
                    self.error((*path, "use"), str(exc))
        return classes

    def _node(self, path: FieldPath, n: Node, role: Role, cls: type[Any]) -> None:
        if any(p not in self.nodes for p in n.from_):
            return  # an upstream failed; its error is already reported
        upstream = self._input_schema(path, n)
        if upstream is None:
            return
        where = self._where(path, n, upstream)
        self._key(path, n, upstream)
        name = _sink_name(n.use) if role == "sink" else n.use
        try:
            params = validate_params(cls, n.with_)
            proto = cls(**params)
            schema = proto.schema(upstream) if hasattr(proto, "schema") else dict(upstream)
        except ParamError as exc:
            kind = "field" if isinstance(exc, FieldError) else "parameter"
            at = (*path, "with", *exc.path)
            self.error(
                at,
                exc.message,
                key=_is_name_problem(exc, n.with_),
                hint=None if kind == "field" else _signature_hint(cls),
            )
            return
        if role == "sink":
            schema = dict(upstream)
        self.nodes[n.id] = CompiledNode(
            n.id,
            role,
            name,
            cls,
            params,
            tuple(n.from_),
            where,
            n.key,
            schema,
            input_schema=dict(upstream),
        )

    def _input_schema(self, path: FieldPath, n: Node) -> dict[str, FieldType] | None:
        merged: dict[str, FieldType] = {}
        for parent in n.from_:
            for name, ftype in self.nodes[parent].schema.items():
                if merged.setdefault(name, ftype) != ftype:
                    self.error(
                        (*path, "from"),
                        f"field {name!r} is {merged[name]} in one "
                        f"input and {ftype} in {parent!r}; inputs must agree on types",
                    )
                    return None
        return merged

    def _where(self, path: FieldPath, n: Node, upstream: Mapping[str, FieldType]) -> Expr | None:
        if n.where is None:
            return None
        try:
            expr = compile_expr(n.where)
        except ExpressionError as exc:
            self.error((*path, "where"), f"invalid expression: {exc}")
            return None
        for name in sorted(expr.names):
            if name not in upstream:
                self.error(
                    (*path, "where"),
                    unknown_name_message("field", name, list(upstream)),
                    hint=f"fields reaching {n.id!r}: {', '.join(upstream)}",
                )
        return expr

    def _key(self, path: FieldPath, n: Node, upstream: Mapping[str, FieldType]) -> None:
        if n.key in ("device", "global"):
            return
        if not FIELD.match(n.key) or n.key not in upstream:
            close = difflib.get_close_matches(n.key, ["device", "global", *upstream], n=1)
            self.error(
                (*path, "key"),
                f"expected 'device', 'global' or a field name, got "
                f"{n.key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
            )
        elif upstream[n.key] not in ("str", "int", "bool"):
            self.error(
                (*path, "key"),
                f"field {n.key!r} is {upstream[n.key]}; a key field must be str, int or bool",
            )


def _sink_name(use: str) -> str:
    return use if "." in use else f"sinks.{use}"


def _is_name_problem(exc: ParamError, given: Mapping[str, Any]) -> bool:
    return len(exc.path) == 1 and exc.path[0] in given and "unknown parameter" in exc.message


def _signature_hint(cls: type[Any]) -> str:
    from fogrt.operator import signature

    shown = [
        p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in signature(cls).parameters.values()
    ]
    return f"{getattr(cls, 'kind', '') or cls.__name__} takes: {', '.join(shown)}"


def _find_cycle(deps: Mapping[str, list[str]]) -> list[str]:
    """One cycle among ``deps`` (every node in it has an unresolved dependency)."""
    start = next(iter(deps))
    seen: list[str] = []
    node = start
    while node not in seen:
        seen.append(node)
        node = next(d for d in deps[node] if d in deps)
    return seen[seen.index(node) :]
