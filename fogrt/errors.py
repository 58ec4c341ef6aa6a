"""The one error tree of fogrt.

::

    FogError                      anything fogrt raises on purpose
    ├── TopologyError             a topology file is wrong: file, line, column, field path, hint
    ├── ParamError                an operator parameter is wrong (raised by constructors)
    ├── FieldError                an operator refers to a field its input does not carry
    ├── ExpressionError           a `where:` or computed-field expression is not allowed
    ├── OperatorError             an operator failed while processing (carries the node id)
    ├── StateError                a snapshot or checkpoint cannot be written or trusted
    ├── IngestError               a request cannot be accepted (rendered as a CoAP error)
    └── InputError                an input file (replay CSV, dataset) cannot be read

    SkipRecord                    not an error: an operator drops the event on purpose

Operators raise ``ParamError``/``FieldError`` with the parameter path they are about; the
topology compiler turns them into a ``TopologyError`` that points at the YAML line.
"""

from __future__ import annotations

from collections.abc import Sequence


class FogError(Exception):
    """Base class of every error fogrt raises on purpose."""


class ParamError(FogError, ValueError):
    """An operator parameter does not fit; ``path`` is relative to the operator's ``with:``."""

    def __init__(self, path: str | Sequence[str | int], message: str) -> None:
        self.path: tuple[str | int, ...] = (path,) if isinstance(path, str) else tuple(path)
        self.message = message
        super().__init__(f"{'.'.join(map(str, self.path))}: {message}" if self.path else message)


class FieldError(ParamError):
    """An operator parameter names a field that the operator's input does not carry."""


class ExpressionError(FogError, ValueError):
    """An expression is not in the allowed language, or cannot be evaluated."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at character {offset + 1})")


class TopologyError(FogError):
    """A topology file is invalid. The message names file, line, column and field path."""

    def __init__(
        self,
        message: str,
        *,
        file: str = "<topology>",
        line: int | None = None,
        column: int | None = None,
        path: Sequence[str | int] = (),
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.path = tuple(path)
        self.hint = hint
        super().__init__(self.render())

    @property
    def field(self) -> str:
        """The field path in dotted form, with list indices in brackets: ``operators[2].with``."""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        text = f"{where}: {self.field}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class TopologyErrors(FogError):
    """Several independent problems found in one file, reported together."""

    def __init__(self, errors: Sequence[TopologyError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(e.render() for e in self.errors))


class OperatorError(FogError):
    """An operator raised while processing an event."""

    def __init__(self, node_id: str, message: str) -> None:
        self.node_id = node_id
        super().__init__(f"operator {node_id!r}: {message}")


class SinkError(FogError):
    """A sink cannot be opened (its file, directory or connection)."""

    def __init__(self, sink_id: str, message: str) -> None:
        self.sink_id = sink_id
        super().__init__(f"sink {sink_id!r}: {message}")


class StateError(FogError):
    """State cannot be written, or a stored blob cannot be trusted and is refused."""


class IngestError(FogError):
    """A request cannot be accepted; the ingest layer renders it as a CoAP error."""


class InputError(FogError):
    """An input file cannot be read as asked (missing column, unparseable time, ...)."""


class SkipRecord(Exception):
    """Raised by an operator to drop the current event on purpose (it is counted, not logged)."""
