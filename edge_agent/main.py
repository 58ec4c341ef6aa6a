# fogagent: the edge agent's entry point (runs after boot.py, on every boot and wake).
# Reads config.json, then wakes -> samples -> sends -> deep-sleeps, forever; see
# fogagent/run.py. To get a REPL instead: hold the safe pin (default GPIO0, the BOOT
# button) low while resetting, or press Ctrl-C during the grace period after a cold boot.
from fogagent.run import main

main()
