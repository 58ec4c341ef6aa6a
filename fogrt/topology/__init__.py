"""Topology files: safe YAML with positions -> pydantic structure -> compiled graph.

:func:`load_topology` is the entry point; see :mod:`fogrt.topology.compile`.
"""

from __future__ import annotations

from fogrt.topology.compile import CompiledNode, CompiledTopology, compile_topology, load_topology

__all__ = ["CompiledNode", "CompiledTopology", "compile_topology", "load_topology"]
