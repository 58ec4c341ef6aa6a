"""CoAP ingest: the fog node's front door.

Readings arrive as CoAP POSTs with msgpack bodies (:mod:`fogrt.ingest.wire`), are checked,
deduplicated, appended to the durable ingest log and only then acknowledged with the
device's current control.
"""
