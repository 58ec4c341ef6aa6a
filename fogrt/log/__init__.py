"""The durable ingest log: segmented, CRC-framed, group-committed, crash-safe.

See :mod:`fogrt.log.ingest_log` for usage, :mod:`fogrt.log.format` for the bytes on disk,
:mod:`fogrt.log.segments` for the recovery rules and :mod:`fogrt.log.group_commit` for the
batching of write+fsync.
"""

from fogrt.log.errors import LogCorruptError, LogFullError, OffsetReleasedError
from fogrt.log.group_commit import BatchFuture
from fogrt.log.ingest_log import IngestLog

__all__ = ["BatchFuture", "IngestLog", "LogCorruptError", "LogFullError", "OffsetReleasedError"]
