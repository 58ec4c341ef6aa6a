"""What a checkpoint holds, and how it is packed into a sealed blob.

Contents (msgpack, inside the signed envelope of :mod:`fogrt.state.sealed`):

- ``offset``: every record of the ingest log before it is reflected, none after;
- ``operators``: node id -> key -> the operator instance's ``snapshot()`` bytes;
- ``dedup``: per-device (boot, high-water mark, bitmap) of :mod:`fogrt.ingest.dedup`;
- ``devices``: the registry (first/last seen, battery, counts, registration body);
- ``controls``: per-device control version, record and recent history;
- ``policies``: per-device control policy (rule signature, source, ``snapshot()`` bytes).

The envelope's header names the fogrt and River versions that wrote it and a digest of
the topology's operators; a checkpoint from another topology or another River version is
refused (River models are pickles and may not load across versions).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from fogrt import __version__
from fogrt.errors import StateError
from fogrt.state.sealed import open_sealed, seal
from fogrt.topology.compile import CompiledTopology


@dataclass
class Checkpoint:
    offset: int
    operators: dict[str, dict[str, bytes]] = field(default_factory=dict)
    dedup: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: float = 0.0
    policies: dict[str, list[Any]] = field(default_factory=dict)

    def size_of_operators(self) -> int:
        return sum(len(b) for blobs in self.operators.values() for b in blobs.values())


def topology_digest(topology: CompiledTopology) -> str:
    """A digest of what decides operator state: ids, kinds, params, inputs, keys, filters."""
    spec = [
        {
            "id": n.id,
            "use": n.use,
            "params": n.params,
            "inputs": n.inputs,
            "key": n.key,
            "where": n.where.source if n.where is not None else None,
        }
        for n in topology.nodes
        if n.role == "operator"
    ]
    text = json.dumps(spec, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _river_version() -> str:
    try:
        from importlib.metadata import version

        return version("river")
    except Exception:  # pragma: no cover - river is a dependency
        return "unknown"


def pack(ckpt: Checkpoint, topology: CompiledTopology, key: bytes) -> bytes:
    payload: bytes = msgpack.packb(
        {
            "offset": ckpt.offset,
            "operators": ckpt.operators,
            "dedup": ckpt.dedup,
            "devices": ckpt.devices,
            "controls": ckpt.controls,
            "policies": ckpt.policies,
        },
        use_bin_type=True,
    )
    header = {
        "fogrt": __version__,
        "river": _river_version(),
        "topology": topology.name,
        "digest": topology_digest(topology),
        "offset": ckpt.offset,
        "created": time.time(),
    }
    return seal(header, payload, key)


def unpack(blob: bytes, topology: CompiledTopology, key: bytes, *, what: str) -> Checkpoint:
    """Verify and decode a checkpoint for ``topology``; StateError if it cannot be trusted."""
    header, payload = open_sealed(blob, key, what=what)
    digest = topology_digest(topology)
    if header.get("digest") != digest:
        raise StateError(
            f"{what} was written for topology {header.get('topology')!r} with other "
            f"operators (digest {header.get('digest')} != {digest}); refusing to load it. "
            "Start with a fresh --state to rebuild from the ingest log."
        )
    river = _river_version()
    if _minor(str(header.get("river"))) != _minor(river):
        raise StateError(
            f"{what} holds models pickled by River {header.get('river')}; this "
            f"node runs River {river}. Refusing to unpickle across versions."
        )
    data = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    return Checkpoint(
        offset=int(data["offset"]),
        operators={n: dict(blobs) for n, blobs in data["operators"].items()},
        dedup={d: [tuple(b) for b in boots] for d, boots in data["dedup"].items()},
        devices=data["devices"],
        controls=data["controls"],
        policies=data.get("policies", {}),
        created=float(header.get("created", 0.0)),
    )


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])
