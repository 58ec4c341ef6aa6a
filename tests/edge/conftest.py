"""tests/edge holds helpers, not pytest modules: mp/ is MicroPython code run by js/run.mjs."""

collect_ignore = ["mp", "js"]
