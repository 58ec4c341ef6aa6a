"""Child process of tests/test_log.py: appends forever and prints each offset once durable.

Usage: ``python tests/log_child.py DIRECTORY``. Each stdout line is ``<offset> <payload>``,
written only after ``wait_durable`` resolved for that offset; the test kills the process
with SIGKILL at a random moment and checks that every printed record survived.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from fogrt.log import IngestLog
from fogrt.logging import configure


async def main(directory: Path) -> None:
    log = IngestLog.open(directory, segment_bytes=32 << 10)  # small: rolls happen too
    out = sys.stdout

    async def worker(w: int) -> None:
        seq = 0
        while True:
            payload = f"{w}:{seq}:".encode() + b"x" * ((w * 7 + seq * 13) % 300)
            offset = log.append(payload)
            await log.wait_durable(offset)
            out.write(f"{offset} {payload.decode()}\n")
            seq += 1

    await asyncio.gather(*(worker(w) for w in range(64)))


if __name__ == "__main__":
    configure("warning")  # logs go to stderr; stdout carries only acknowledged offsets
    asyncio.run(main(Path(sys.argv[1])))
