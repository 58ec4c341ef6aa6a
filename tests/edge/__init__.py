"""Helpers for the edge agent's tests (tests/test_edge_*.py)."""
