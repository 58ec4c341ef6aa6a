"""The aiocoap resources of the fog node (everything that is not the hot uplink path).

- ``POST /reg``: first contact: firmware, sensors, battery capacity (2.01 + full control);
- ``GET /c/<device>``: the device's current control, Observe-capable, for mains-powered
  devices that keep a connection;
- ``POST /r/<source>`` through aiocoap: uplinks that use block-wise transfer (or anything
  else the lean path hands over) get the same handling as on the hot path;
- ``/.well-known/core``: resource discovery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiocoap
from aiocoap import error, resource
from aiocoap.numbers.codes import Code
from aiocoap.util.linkformat import Link, LinkFormat

from fogrt.control import ControlStore
from fogrt.ingest.endpoint import Later, Reply, Uplink
from fogrt.ingest.wire import (
    CONTENT_FORMAT,
    WireError,
    check_content_format,
    decode_registration,
    encode_control_delta,
)


def to_message(reply: Reply) -> aiocoap.Message:
    """An aiocoap response from a hot-path :class:`Reply`."""
    major, minor = (int(x) for x in reply.code.split("."))
    msg = aiocoap.Message(code=Code(major << 5 | minor), payload=reply.payload)
    if reply.content_format is not None:
        msg.opt.content_format = reply.content_format
    if reply.max_age is not None:
        msg.opt.max_age = reply.max_age
    return msg


class UplinkResource(resource.Resource, resource.PathCapable):
    """``/r/...`` reached through aiocoap (block-wise uploads): the hot path's handler."""

    def __init__(
        self, prefix: str, handle: Callable[[Uplink], Any], sources: dict[tuple[str, ...], str]
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.handle = handle
        self.sources = sources

    def get_resources_as_linkheader(self) -> LinkFormat:
        """One link per source, for ``/.well-known/core``."""
        return LinkFormat(
            [
                Link("/" + "/".join(rest), rt=f"fogrt.source.{source_id}", ct=str(CONTENT_FORMAT))
                for rest, source_id in self.sources.items()
            ]
        )

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        remote = request.remote
        up = Uplink(
            self.prefix,
            tuple(request.opt.uri_path),
            request.payload,
            request.opt.content_format,
            (str(remote.hostinfo), 0),
            True,
            b"",
            0,
        )
        result = self.handle(up)
        if type(result) is Later:
            await result.ready  # fails as the hot path's Later does
            reply = result.reply
        else:
            reply = await result if asyncio.isfuture(result) else result
        return to_message(reply)


class ControlResource(resource.ObservableResource, resource.PathCapable):
    """``GET /c/<device>``: the whole current control of a device; observable."""

    def __init__(self, controls: ControlStore) -> None:
        super().__init__()
        self.controls = controls
        self._watchers: dict[str, set[Any]] = {}

    def get_link_description(self) -> dict[str, str] | None:
        return None

    async def add_observation(self, request: aiocoap.Message, serverobservation: Any) -> None:
        path = request.opt.uri_path
        if len(path) != 1:
            return
        device = path[0]
        watchers = self._watchers.setdefault(device, set())
        watchers.add(serverobservation)

        def cancel() -> None:
            watchers.discard(serverobservation)
            if not watchers:
                self._watchers.pop(device, None)

        serverobservation.accept(cancel)

    def changed(self, device: str) -> None:
        """Notify the observers of ``device`` (call after its control changed)."""
        for obs in list(self._watchers.get(device, ())):
            obs.trigger()

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        path = request.opt.uri_path
        if len(path) != 1 or not path[0]:
            raise error.NotFound("use /c/<device>")
        version, control = self.controls.get(path[0])
        body = encode_control_delta(control, version, None)
        return aiocoap.Message(payload=body, content_format=CONTENT_FORMAT)


class RegistrationResource(resource.Resource):
    """``POST /reg``: a device introduces itself."""

    ct = str(CONTENT_FORMAT)

    def __init__(self, register: Callable[[Any, bytes], Any], controls: ControlStore) -> None:
        super().__init__()
        self.register = register
        self.controls = controls

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        try:
            check_content_format(request.opt.content_format)
            reg = decode_registration(request.payload)
        except WireError as exc:
            return to_message(Reply(exc.code, exc.diagnostic.encode()))
        refused = await self.register(reg, request.payload)
        if refused is not None:
            code = "5.03" if refused == "full" else "4.01"
            return to_message(Reply(code, f"device {reg.device} is {refused}".encode()))
        version, control = self.controls.get(reg.device)
        body = encode_control_delta(control, version, None)
        return aiocoap.Message(code=Code.CREATED, payload=body, content_format=CONTENT_FORMAT)


def build_site(
    service: Any, register: Callable[[Any, bytes], Any], controls: ControlStore
) -> tuple[resource.Site, ControlResource]:
    """The aiocoap resource tree of a fog node."""
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
    )
    site.add_resource(["reg"], RegistrationResource(register, controls))
    control = ControlResource(controls)
    site.add_resource(["c"], control)
    for prefix in service.prefixes:
        sources = {
            rest: source_id for (p, rest), (source_id, _) in service.sources.items() if p == prefix
        }
        site.add_resource([prefix], UplinkResource(prefix, service.handle, sources))
    return site, control
