"""Checkpoints in Redis, for fog nodes that share state (and for the fleet's workers).

Key layout (``NS`` is the topology name unless configured)::

    fogrt:NS:ckpt:<offset>:<part>   the sealed checkpoint, in parts of at most 4 MiB
    fogrt:NS:ckpts                  sorted set: member "<offset>:<parts>", score offset

Parts are written first, pipelined; the sorted-set entry that makes a checkpoint visible
is added last, so a reader never sees a partial one. Older checkpoints beyond ``keep`` are
removed afterwards.

Connection settings: the URL (``redis://host:port/db`` or ``rediss://`` for TLS) comes
from the topology or the command line and must not carry credentials; the username,
password and TLS files come from the environment: ``FOGRT_REDIS_USERNAME``,
``FOGRT_REDIS_PASSWORD``, ``FOGRT_REDIS_CA_CERT``, ``FOGRT_REDIS_CLIENT_CERT``,
``FOGRT_REDIS_CLIENT_KEY``.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from fogrt.errors import StateError
from fogrt.state import StateBackend, StoredCheckpoint

PART = 4 << 20


def check_url(url: str) -> None:
    """Refuse URLs that are not Redis or that carry credentials (they belong in the env)."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected redis://host:port/db or rediss://..., got {url!r}")
    if parts.username or parts.password:
        raise ValueError(
            "credentials do not go in the URL: set FOGRT_REDIS_USERNAME and "
            "FOGRT_REDIS_PASSWORD in the environment"
        )


def connect(url: str, *, timeout: float = 5.0) -> Any:
    """An asyncio Redis client for ``url`` with credentials and TLS from the environment."""
    import redis.asyncio as aioredis

    check_url(url)
    env = os.environ
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "username": env.get("FOGRT_REDIS_USERNAME") or None,
        "password": env.get("FOGRT_REDIS_PASSWORD") or None,
    }
    if url.startswith("rediss://"):
        kwargs.update(
            ssl_ca_certs=env.get("FOGRT_REDIS_CA_CERT") or None,
            ssl_certfile=env.get("FOGRT_REDIS_CLIENT_CERT") or None,
            ssl_keyfile=env.get("FOGRT_REDIS_CLIENT_KEY") or None,
        )
    return aioredis.Redis.from_url(url, **kwargs)


class RedisBackend(StateBackend):
    def __init__(self, url: str, namespace: str, keep: int = 2) -> None:
        self.url = url
        self.prefix = f"fogrt:{namespace}"
        self.keep = keep
        self._client = connect(url)

    async def write(self, offset: int, blob: bytes) -> None:
        parts = [blob[i : i + PART] for i in range(0, len(blob), PART)] or [b""]
        pipe = self._client.pipeline(transaction=False)
        for i, part in enumerate(parts):
            pipe.set(f"{self.prefix}:ckpt:{offset}:{i}", part)
        pipe.zadd(f"{self.prefix}:ckpts", {f"{offset}:{len(parts)}": offset})
        await pipe.execute()
        members = await self._client.zrevrange(f"{self.prefix}:ckpts", 0, -1)
        stale = members[self.keep :]
        if stale:
            pipe = self._client.pipeline(transaction=False)
            for member in stale:
                old, n = member.decode().split(":")
                pipe.zrem(f"{self.prefix}:ckpts", member)
                for i in range(int(n)):
                    pipe.delete(f"{self.prefix}:ckpt:{old}:{i}")
            await pipe.execute()

    async def checkpoints(self) -> list[StoredCheckpoint]:
        members = await self._client.zrevrange(f"{self.prefix}:ckpts", 0, -1)
        out = []
        for member in members:
            offset, n = (int(x) for x in member.decode().split(":"))
            keys = [f"{self.prefix}:ckpt:{offset}:{i}" for i in range(n)]
            parts = await self._client.mget(keys)
            if any(p is None for p in parts):
                raise StateError(f"checkpoint {offset} in {self.url} is missing parts")
            out.append(StoredCheckpoint(offset, b"".join(parts)))
        return out

    async def close(self) -> None:
        await self._client.aclose()
