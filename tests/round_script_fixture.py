"""A real stand-in round process for the runner tests: JSON-lines progress, a child, sleeps.

Usage: python round_script_fixture.py PIDFILE STEPS SLEEP_S [FAIL]
Writes its own pid and its child's pid to PIDFILE, then prints STEPS progress
lines ``{"stage", "step", "total", "message", "metrics"}`` SLEEP_S apart, one
non-JSON line, and exits 0 (or 3 with a message on stderr when FAIL is given).
"""

import json
import subprocess
import sys
import time

pid_file, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(pid_file, "w") as handle:
    handle.write(f"{child.pid}\n")
print("starting (a plain log line)", flush=True)
for step in range(1, steps + 1):
    time.sleep(pause)
    event = {
        "stage": "lpg_train",
        "step": step,
        "total": steps,
        "message": f"step {step}",
        "metrics": {"loss": 1.0 / step},
    }
    print(json.dumps(event), flush=True)
child.kill()
if len(sys.argv) > 4:
    print("boom: the stand-in round failed", file=sys.stderr, flush=True)
    raise SystemExit(3)
