# fogagent: runs on every boot, including each wake from deep sleep: keep it tiny.
# The agent itself starts from main.py.
try:
    import esp

    esp.osdebug(None)  # no ESP-IDF debug lines mixed into the REPL and the agent's logs
except ImportError:
    pass
