"""The operator contract: what the engine, replay and the distributed workers all drive.

An operator is a small synchronous object. It never does I/O, never logs and never touches
an event loop; given its parameters, its state and its input it is deterministic, which is
what makes replay after a crash give the same state as a run without one.

Conventions (the conformance suite in ``tests/test_conformance.py`` checks them for every
registered operator):

- every constructor argument is stored under the same attribute name, unchanged; learned
  state lives in other attributes (``params()``, ``clone()`` and ``repr`` rely on it);
- ``snapshot()`` returns the whole learned state and ``restore()`` puts it into a fresh clone
  so that the clone's next outputs are identical to the original's;
- ``schema()`` says which fields come out given the fields that go in, and raises
  ``FieldError`` naming the parameter that refers to a field the input does not carry;
- the engine calls ``bind(upstream)`` once on every new instance before its first event;
- ``_unit_test_params()`` yields parameter sets for the conformance suite, whose stream
  carries float fields ``x``, ``y``, ``z`` (``y`` is sometimes missing) and an int field
  ``label``, for keys ``a`` and ``b``, one event a second.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import pickle
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Self

import pydantic

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.types import NUMERIC, FieldType, Schema, Timestamp


class Operator(abc.ABC):
    """Base class of every operator. Subclasses set ``kind`` to the name used in YAML."""

    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def process(self, event: Event) -> Iterable[Event]:
        """Consume one event, return 0..n events (a tuple or list; no I/O, no logging)."""

    def on_tick(self, now: Timestamp) -> Iterable[Event]:
        """Timers: ``now`` is the key's event-time watermark; emit what is due (windows)."""
        return ()

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        """The fields this operator emits, given the fields it receives (default: the same)."""
        return dict(upstream)

    def bind(self, upstream: Schema) -> None:
        """Called once on a new instance, before its first event, with the compiled input.

        Operators whose defaults depend on the input (``fields`` left out meaning "every
        numeric field") settle them here instead of discovering them event by event. It
        must not change a parameter. Default: nothing.
        """

    def metrics(self) -> dict[str, float]:
        """Counters and progressive metrics worth showing (anomalies, late events, MAE...)."""
        return {}

    # -- state ---------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The whole learned state: every attribute that is not a parameter, pickled.

        Pickled state is only ever loaded from fogrt's own signed state store.
        """
        names = set(self.param_names())
        state = {k: v for k, v in vars(self).items() if k not in names}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Replace the learned state with a snapshot taken from an operator of the same params."""
        state = pickle.loads(blob)
        if not isinstance(state, dict):
            raise TypeError("snapshot is not an operator state mapping")
        vars(self).update(state)

    # -- parameters ----------------------------------------------------------------------

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, in order."""
        return list(signature(cls).parameters)

    def params(self) -> dict[str, Any]:
        """The constructor arguments this instance was built with."""
        return {name: getattr(self, name) for name in self.param_names()}

    def clone(self) -> Self:
        """A fresh instance with the same parameters and no learned state."""
        return type(self)(**self.params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the conformance suite runs this operator with."""
        yield {}


# -- parameter validation --------------------------------------------------------------------


_SIGNATURES: dict[type[Any], inspect.Signature] = {}
_MODELS: dict[type[Any], type[pydantic.BaseModel]] = {}


def signature(cls: type[Any]) -> inspect.Signature:
    """The keyword parameters of ``cls``'s constructor (cached)."""
    sig = _SIGNATURES.get(cls)
    if sig is None:
        full = inspect.signature(cls)
        sig = full.replace(
            parameters=[
                p
                for p in full.parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            ]
        )
        _SIGNATURES[cls] = sig
    return sig


def _params_model(cls: type[Any]) -> type[pydantic.BaseModel]:
    model = _MODELS.get(cls)
    if model is None:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
        fields: dict[str, Any] = {}
        for name, p in signature(cls).parameters.items():
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[name] = (hints.get(name, Any), default)
        config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
        model = pydantic.create_model(f"{cls.__name__}Params", __config__=config, **fields)
        _MODELS[cls] = model
    return model


def validate_params(cls: type[Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the constructor of ``cls`` (an operator or a sink).

    Raises ``ParamError`` with the parameter path and, for unknown names, suggestions.
    """
    known = list(signature(cls).parameters)
    for name in params:
        if name not in known:
            raise ParamError(name, unknown_name_message("parameter", name, known))
    try:
        model = _params_model(cls).model_validate(dict(params))
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        if err["type"] == "missing":
            raise ParamError(loc, f"required parameter of {cls.kind or cls.__name__}") from None
        raise ParamError(loc, _pydantic_message(err)) from None
    return {name: getattr(model, name) for name in known if name in params}


def build(cls: type[Operator], params: Mapping[str, Any]) -> Operator:
    """Validate ``params`` and construct the operator (constructor checks raise ParamError)."""
    return cls(**validate_params(cls, params))


def _pydantic_message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    given = err.get("input")
    if given is not None and err["type"] not in ("value_error",):
        msg += f", got {given!r}"
    return msg


def unknown_name_message(what: str, name: str, known: Sequence[str]) -> str:
    """``unknown parameter 'sise' (did you mean 'size'?)`` or the list of what exists."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return f"unknown {what} {name!r} (did you mean {' or '.join(map(repr, close))}?)"
    if not known:
        return f"unknown {what} {name!r}"
    return f"unknown {what} {name!r}; expected one of: {', '.join(sorted(known))}"


# -- helpers operators use in schema() --------------------------------------------------------


def require_fields(
    upstream: Schema,
    names: Iterable[str],
    param: str | Sequence[str | int],
    *,
    numeric: bool = False,
) -> None:
    """Raise ``FieldError`` at ``param`` if a name is not an upstream field (or not numeric)."""
    base = (param,) if isinstance(param, str) else tuple(param)
    for i, name in enumerate(names):
        path = (*base, i) if isinstance(names, list | tuple) else (*base, name)
        if name not in upstream:
            raise FieldError(path, unknown_name_message("field", name, list(upstream)))
        if numeric and upstream[name] not in NUMERIC:
            raise FieldError(path, f"field {name!r} is {upstream[name]}, expected a number")


def numeric_fields(upstream: Schema) -> list[str]:
    """The upstream fields that are numbers, in declaration order."""
    return [name for name, t in upstream.items() if t in NUMERIC]
