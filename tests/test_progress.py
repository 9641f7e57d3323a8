"""Progress events as JSON lines and cancellation through real signals."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap

from napari_lesion_harvest.progress import CancelToken, JsonLinesProgress, parse_progress_line


def test_json_lines_progress_writes_one_parsable_event_per_call():
    stream = io.StringIO()
    progress = JsonLinesProgress(stream)
    progress("scan", 3, 10, "volume 3", {"boxes": 12})
    progress("scan", 4, 10)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["stage"], e["step"], e["total"]) for e in events] == [
        ("scan", 3, 10),
        ("scan", 4, 10),
    ]
    assert events[0]["metrics"] == {"boxes": 12} and events[1]["message"] == ""


def test_parse_progress_line_accepts_events_and_skips_other_output():
    event = parse_progress_line('{"stage": "scan", "step": 2, "total": 5}\n')
    assert event == {"stage": "scan", "step": 2, "total": 5, "message": "", "metrics": {}}
    assert parse_progress_line("Epoch 1 loss 0.3") is None
    assert parse_progress_line('{"no_stage": 1}') is None
    assert parse_progress_line("{broken json") is None


def test_sigterm_sets_the_cancel_token_in_a_real_process():
    script = textwrap.dedent(
        """
        import sys, time
        from napari_lesion_harvest.progress import CancelToken
        token = CancelToken()
        token.install_signal_handlers()
        print("ready", flush=True)
        for step in range(600):
            if token():
                print(f"stopped at {step}", flush=True)
                sys.exit(0)
            time.sleep(0.05)
        sys.exit(3)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    os.kill(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert out.startswith("stopped at")


def test_cancel_token_restores_previous_handlers():
    before = signal.getsignal(signal.SIGTERM)
    token = CancelToken()
    restore = token.install_signal_handlers()
    assert signal.getsignal(signal.SIGTERM) is not before
    restore()
    assert signal.getsignal(signal.SIGTERM) is before
    assert not token()
    token.cancel()
    assert token()
