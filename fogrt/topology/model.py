"""The topology document as pydantic models: the structural half of validation.

This module checks shapes and types (what keys exist, what each value must look like).
Everything that needs the whole document (references, cycles, fields, operator
parameters) is checked by :mod:`fogrt.topology.compile`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fogrt.types import Duration, FieldType

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")
"""Ids of sources, operators and sinks (they appear in metrics, URLs and graphs)."""
FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
"""Field names: identifiers, so expressions can use them."""

Ident = Annotated[str, Field(pattern=IDENT.pattern)]
FieldName = Annotated[str, Field(pattern=FIELD.pattern)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class FieldSpec(_Strict):
    """A declared source field: ``temp: float`` or ``temp: {type: float, unit: C}``."""

    type: FieldType
    unit: str | None = None
    description: str | None = None


class Source(_Strict):
    """Where readings enter: a CoAP path and the fields a reading carries."""

    coap: str | None = Field(default=None, description="CoAP path, default /r/<source id>")
    fields: dict[FieldName, FieldSpec] = Field(min_length=1)
    description: str | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: {"type": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @field_validator("coap")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"/[A-Za-z0-9_\-/]{1,100}", value):
            raise ValueError("expected a CoAP path such as /r/pump (letters, digits, _ - /)")
        return value


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Node(_Strict):
    """An operator or a sink: ``{id, use, from, with, where, key}``."""

    id: Ident
    use: str = Field(min_length=1)
    from_: Annotated[list[Ident], Field(alias="from", min_length=1)]
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    where: str | None = None
    key: str = Field(default="device", description="device (default), global, or a field name")

    @field_validator("from_", mode="before")
    @classmethod
    def _from(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("with_", mode="before")
    @classmethod
    def _with(cls, value: Any) -> Any:
        return {} if value is None else value


class Policy(_Strict):
    use: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class ControlGroup(_Strict):
    """A policy for some devices: those whose id matches a glob of ``devices`` and that post
    to one of ``sources`` (an omitted list matches every device or source)."""

    devices: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = None
    sources: list[Ident] | None = None
    policy: Policy

    @field_validator("devices", "sources", mode="before")
    @classmethod
    def _many(cls, value: Any) -> Any:
        return _one_or_many(value)

    @model_validator(mode="after")
    def _selects(self) -> ControlGroup:
        if not self.devices and not self.sources:
            raise ValueError("a group needs devices (globs such as pump-*) or sources")
        return self


class Alerts(_Strict):
    """Anomalies that reach the policies (``Policy.alert``: burst sampling, for example)."""

    from_: Annotated[list[Ident], Field(alias="from", min_length=1)]
    field: FieldName = "is_anomaly"

    @field_validator("from_", mode="before")
    @classmethod
    def _from(cls, value: Any) -> Any:
        return _one_or_many(value)


class Control(_Strict):
    """The fog node's control loop: which policy decides each device's control."""

    policy: Policy | None = None
    groups: list[ControlGroup] = Field(default_factory=list)
    alerts: Alerts | None = None


class State(_Strict):
    """Where operator state is kept and how often it is checkpointed."""

    backend: Literal["file", "redis"] = "file"
    path: str = ".fogrt/state"
    url: str | None = None
    checkpoint_every: Duration = 5.0

    @model_validator(mode="after")
    def _url_for_redis(self) -> State:
        if self.backend == "redis" and not self.url:
            raise ValueError(
                "backend redis needs url (e.g. redis://host:6379/0; credentials "
                "come from the environment, never from the topology)"
            )
        if self.url is not None:
            from fogrt.state.redis import check_url

            check_url(self.url)
        return self


class Metadata(_Strict):
    name: Ident
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class Topology(_Strict):
    """A whole topology document (``apiVersion: fogrt/v1``, ``kind: Topology``)."""

    apiVersion: Literal["fogrt/v1"]
    kind: Literal["Topology"]
    metadata: Metadata
    sources: dict[Ident, Source] = Field(min_length=1)
    operators: list[Node] = Field(default_factory=list)
    sinks: list[Node] = Field(default_factory=list)
    control: Control | None = None
    state: State = Field(default_factory=State)


TOP_LEVEL_KEYS = list(Topology.model_fields)
