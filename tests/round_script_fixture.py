"""A real stand-in round process for the runner tests: JSON-lines progress, a child, sleeps.

Usage: python round_script_fixture.py PIDFILE STEPS SLEEP_S [fail] [stage=NAME] [saves-on-term]
Writes its child's pid to PIDFILE, then prints STEPS progress lines ``{"stage",
"step", "total", "message", "metrics"}`` of stage NAME (default ``lpg_train``)
SLEEP_S apart, one non-JSON line, and exits 0 (or 3 with a message on stderr
with ``fail``). With ``saves-on-term`` it answers SIGTERM as pretraining does:
a ``done`` event "stopped and saved: STEP of STEPS steps", exit 0.
"""

import json
import signal
import subprocess
import sys
import time

pid_file, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
options = sys.argv[4:]
stage = next((o.removeprefix("stage=") for o in options if o.startswith("stage=")), "lpg_train")
step = 0


def emit(name: str, message: str) -> None:
    event = {"stage": name, "step": step, "total": steps, "message": message, "metrics": {}}
    print(json.dumps(event), flush=True)


def stop_and_save(signum, frame):
    emit("done", f"stopped and saved: {step} of {steps} steps")
    raise SystemExit(0)


if "saves-on-term" in options:
    signal.signal(signal.SIGTERM, stop_and_save)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(pid_file, "w") as handle:
    handle.write(f"{child.pid}\n")
print("starting (a plain log line)", flush=True)
for step in range(1, steps + 1):
    time.sleep(pause)
    emit(stage, f"step {step}")
child.kill()
if "fail" in options:
    print("boom: the stand-in round failed", file=sys.stderr, flush=True)
    raise SystemExit(3)
