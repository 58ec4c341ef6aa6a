"""The live dashboard and Prometheus ``/metrics`` of a fog node (see docs/dashboard.md).

``Dashboard(node, host, port, token)`` serves, inside the node's event loop, a read-only
page that updates once a second over Server-Sent Events (overview, topology, devices,
anomalies, models), its JSON endpoints and ``/metrics``. The page is static files with
uPlot vendored from npm: no CDN, no build step, it works on an offline fog site.
"""

from __future__ import annotations

from fogrt.dashboard.server import Dashboard, DashboardConfigError, DashboardError, is_loopback

__all__ = ["Dashboard", "DashboardConfigError", "DashboardError", "is_loopback"]
