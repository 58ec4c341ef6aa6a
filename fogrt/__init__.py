"""fogrt: a fog-computing runtime for online machine learning on IoT sensor streams.

Importing this package is cheap on purpose: it does not import River, aiocoap or an event
loop. The pieces live in their own modules (see the README for the map).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
