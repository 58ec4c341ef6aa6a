"""Where operator and sink names used in YAML are looked up.

Operators come only from the ``fogrt.operators`` entry-point group: the built-ins in
``operators/`` are registered by fogrt's own ``pyproject.toml`` exactly as a third-party
package would register its own. Sinks do I/O, so the built-in ones live in ``fogrt.sinks``;
third parties add more through the ``fogrt.sinks`` group. Nothing is imported until it is
used, and nothing is ever imported by a name taken from a topology file: a name is only a
key into these tables.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from fogrt.errors import FogError
from fogrt.operator import Operator, unknown_name_message


class UnknownNameError(FogError, LookupError):
    """A ``use:`` name is in no registry. The message carries did-you-mean suggestions."""


class Registry:
    """``"family.name" -> "module:Class"``, merged from built-ins and an entry-point group."""

    def __init__(
        self, what: str, group: str, builtins: Mapping[str, str] | None = None, prefix: str = ""
    ) -> None:
        self.what = what
        self.group = group
        self.prefix = prefix
        self._builtins = dict(builtins or {})
        self._loaded: dict[str, type[Any]] = {}

    @property
    def targets(self) -> dict[str, str]:
        """Every known name and the ``module:Class`` it points at (nothing imported)."""
        table = dict(self._builtins)
        table.update(_entry_points(self.group))
        return table

    def names(self) -> list[str]:
        return sorted(self.targets)

    def __contains__(self, name: object) -> bool:
        return name in self.targets

    def get(self, name: str) -> type[Any]:
        """The class registered under ``name``, imported on first use."""
        if name in self._loaded:
            return self._loaded[name]
        target = self.targets.get(name)
        if target is None:
            # Suggest on what the user wrote: `jsnl`, not `sinks.jsnl`.
            short = [n.removeprefix(self.prefix) for n in self.names()]
            raise UnknownNameError(
                unknown_name_message(self.what, name.removeprefix(self.prefix), short)
            )
        module_name, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            # A broken plugin must not look like a crash of fogrt: name it and say why.
            raise UnknownNameError(
                f"{self.what} {name!r} is registered as {target!r} but cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        self._loaded[name] = obj
        return obj  # type: ignore[no-any-return]


@cache
def _entry_points(group: str) -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=group)}


OPERATORS = Registry("operator", "fogrt.operators")

SINKS = Registry(
    "sink",
    "fogrt.sinks",
    {
        "sinks.stdout": "fogrt.sinks.stream:StdoutSink",
        "sinks.jsonl": "fogrt.sinks.files:JsonlSink",
        "sinks.csv": "fogrt.sinks.files:CsvSink",
    },
    prefix="sinks.",
)


POLICIES = Registry("policy", "fogrt.policies")
"""Duty-cycle control policies (per-device objects deciding each device's Control)."""


def operator_class(name: str) -> type[Operator]:
    """The operator class registered under ``name``."""
    cls = OPERATORS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Operator)):
        raise UnknownNameError(f"{name!r} is registered but is not an Operator subclass")
    return cls
