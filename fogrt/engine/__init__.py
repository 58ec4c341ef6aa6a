"""The embedded dataflow engine.

:mod:`fogrt.engine.dataflow` wires a compiled topology into per-node delivery functions
with lazily created per-key operator instances (synchronous, deterministic).
:mod:`fogrt.engine.runner` drives it on asyncio: micro-batches from a bounded queue,
timers from per-key watermarks, batched sink writes.
"""
