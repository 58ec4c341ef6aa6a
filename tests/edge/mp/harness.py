"""A tiny test runner for the edge agent's tests, the same under MicroPython and CPython.

``python harness.py MODULE [INPUT.json]`` (or, under MicroPython-WASM, run by
tests/edge/js/run.mjs with ``--arg MODULE``) calls every ``test_*`` function of MODULE
with the decoded input (test vectors computed by fogrt in the pytest process), prints
``PASS name`` / ``FAIL name`` with the traceback, then ``edge-tests: N passed, M failed``,
and the sentinel line only when nothing failed: the JS runner's exit code depends on it,
because the MicroPython-WASM CLI exits 0 even after an exception.
"""

import json
import sys

SENTINEL = "EDGE-SENTINEL-OK"
MICROPYTHON = sys.implementation.name == "micropython"
_dirs = [0]


def tmpdir():
    """A new empty directory (MicroPython-WASM: in its in-memory filesystem)."""
    import os

    if MICROPYTHON:
        _dirs[0] += 1
        path = f"/tmp/edge{_dirs[0]}"
        os.mkdir(path)
        return path
    import tempfile

    return tempfile.mkdtemp(prefix="edge-")


def _print_exception(e):
    if MICROPYTHON:
        sys.print_exception(e)
    else:
        import traceback

        traceback.print_exception(e)


def main(module, input_path=None):
    inputs = {}
    if input_path:
        with open(input_path) as f:
            inputs = json.load(f)
    mod = __import__(module)
    names = sorted(n for n in dir(mod) if n.startswith("test_"))
    passed = failed = 0
    for name in names:
        try:
            getattr(mod, name)(inputs)
        except Exception as e:
            failed += 1
            print("FAIL", name, repr(e))
            _print_exception(e)
        else:
            passed += 1
            print("PASS", name)
    print(f"edge-tests: {passed} passed, {failed} failed")
    if passed and not failed:
        print(SENTINEL)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
