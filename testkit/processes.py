"""Ending a child process a test or bench started: politely, then for sure."""

from __future__ import annotations

import subprocess


def stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """SIGTERM, wait up to `timeout_s`, then SIGKILL: a child that ignores SIGTERM must not outlive its parent."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
