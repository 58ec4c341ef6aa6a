"""fogrt's built-in operator library: pure, synchronous, deterministic.

Modules are families (``preprocess``, ``window``, ``learn``, ``transform``); each operator is
registered under ``family.name`` through the ``fogrt.operators`` entry-point group in
``pyproject.toml``. Nothing here does I/O, logs, or touches an event loop.
"""
