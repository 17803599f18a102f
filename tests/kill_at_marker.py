"""Run a child process until it writes a marker file, then SIGKILL it: a job killed at a chosen point, for real."""

import signal
import subprocess
import time


def kill_when_marker_appears(cmd, env, marker, what: str, timeout: float = 120) -> None:
    """Start `cmd`; once `marker` exists, SIGKILL it and wait. Fails if it ends first or never gets there."""
    child = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.time() + timeout
        while not marker.exists():
            assert child.poll() is None, "the job ended before it was killed"
            assert time.time() < deadline, f"the job never {what}"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
