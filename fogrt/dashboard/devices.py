"""The device table: filter, sort and page the node's devices on the server.

A fog node may track a hundred thousand devices, so the page never receives them all:
``/api/devices?offset=&limit=&sort=&q=`` returns one page. Each device's sort value is computed
alone (not its whole row); an early page of a big table is picked with a heap instead of a
full sort, and only the rows of the page are built. Missing values sort last in either
direction.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from fogrt.ingest.registry import DeviceInfo
from fogrt.metrics import NodeMetrics, uplink_rate

MAX_LIMIT = 500
"""The largest page a client may ask for."""

SORT_KEYS = sorted(
    [
        "device",
        "first_seen",
        "last_seen",
        "battery",
        "battery_mv",
        "uplinks",
        "readings",
        "interval",
        "policy",
        "projected_life",
        "pending",
        "online",
    ]
)
"""What ``sort=`` accepts (``-`` in front for descending)."""

Pairs = list[tuple[str, DeviceInfo]]


class QueryError(ValueError):
    """A bad query parameter (answered with 400 and this message)."""


def query_devices(
    metrics: NodeMetrics,
    devices: Pairs | None = None,
    *,
    offset: int = 0,
    limit: int = 50,
    sort: str = "-last_seen",
    q: str = "",
) -> dict[str, Any]:
    """One page of the device table, with the totals the pager needs.

    ``devices`` is a snapshot of ``metrics.devices().items()`` (taken on the event loop, so
    this may run in a worker thread); None takes it here.
    """
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"expected offset >= 0 and 1 <= limit <= {MAX_LIMIT}")
    descending = sort.startswith("-")
    key = sort.lstrip("-+")
    if key not in SORT_KEYS:
        raise QueryError(f"sort: expected one of {', '.join(SORT_KEYS)} (- for descending)")
    if devices is None:
        devices = list(metrics.devices().items())
    now = metrics.clock()
    needle = q.strip().lower()
    pairs = [p for p in devices if needle in p[0].lower()] if needle else devices
    value_of = _sort_value(metrics, key, now)

    def order(pair: tuple[str, DeviceInfo]) -> tuple[bool, Any, str]:
        value = value_of(*pair)
        missing = value is None  # missing values go last in both directions
        return (not missing if descending else missing, 0 if missing else value, pair[0])

    wanted = offset + limit
    if wanted < len(pairs) // 8:  # an early page of a big table: no full sort
        pick = heapq.nlargest if descending else heapq.nsmallest
        ordered = pick(wanted, pairs, key=order)
    else:
        ordered = sorted(pairs, key=order, reverse=descending)
    page = ordered[offset:wanted]
    return {
        "total": len(devices),
        "matched": len(pairs),
        "offset": offset,
        "limit": limit,
        "sort": ("-" if descending else "") + key,
        "q": q,
        "online_factor": metrics.online_factor,
        "rows": [metrics.device_facts(d, i, now).as_json() for d, i in page],
    }


def _sort_value(metrics: NodeMetrics, key: str, now: float) -> Callable[[str, DeviceInfo], Any]:
    """The value a device sorts by, computed without building its whole row."""
    control = metrics.node.controls.get
    energy = metrics.energy
    keys: dict[str, Callable[[str, DeviceInfo], Any]] = {
        "device": lambda d, i: d,
        "first_seen": lambda d, i: i.first_seen,
        "last_seen": lambda d, i: i.last_seen or None,
        "battery": lambda d, i: i.battery_pct if i.battery_pct is not None else i.battery_mv,
        "battery_mv": lambda d, i: i.battery_mv,
        "uplinks": lambda d, i: i.uplinks,
        "readings": lambda d, i: i.readings,
        "interval": lambda d, i: control(d)[1].interval,
        "policy": lambda d, i: metrics.policy(d),
        "projected_life": lambda d, i: energy.projected_life_s(
            control(d)[1],
            i.battery_pct,
            i.battery_mv,
            i.registration.capacity_mah if i.registration is not None else None,
            uplink_rate(i),
        ),
        "pending": lambda d, i: metrics.device_facts(d, i, now).pending,
        "online": lambda d, i: metrics.is_online(d, i, now),
    }
    return keys[key]
