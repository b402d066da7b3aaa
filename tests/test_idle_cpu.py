"""An app with no visitor is idle: `python app.py` uses next to no CPU once it has started.

Gradio's queue polled every 1 ms (and its progress loop every 10 ms) with nothing to do: 5-6 % of a core, all
the time. This counts the app process's own CPU seconds (all threads, /proc/<pid>/stat), not wall-clock speed:
a loaded machine does not make an idle process use more CPU time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from testkit.browser import REPO, app_process, free_port

IDLE_WINDOW_S = 5.0
MAX_IDLE_SHARE = 0.02  # of one core; the polling queue used 0.05-0.06, an idle one uses about 0.002
SETTLE_S = 90.0  # start-up work (the speech models' preload thread) may take this long on a loaded machine


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_an_app_with_no_visitor_uses_next_to_no_cpu(tmp_path):
    port = free_port()
    env = dict(os.environ)
    env.update(
        WORKBENCH_CACHE_DIR=str(tmp_path / "cache"),
        WORKBENCH_RUNS_DIR=str(tmp_path / "runs"),
        WORKBENCH_MODELS_DIR=str(tmp_path / "models"),
        WORKBENCH_PREPARE_EXAMPLE="false",  # the example's preparation is work, not idling
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    cmd = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}/config"
    with app_process(cmd, REPO, env, url, tmp_path / "server.log", 240, "idle_app_server.log") as proc:
        shares = []
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            c0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(IDLE_WINDOW_S)
            shares.append((_cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0))
            if len(shares) >= 2 and max(shares[-2:]) <= MAX_IDLE_SHARE:
                break
    # Two windows in a row at most 2 % of a core once start-up is over; a poller makes every window high.
    assert len(shares) >= 2 and max(shares[-2:]) <= MAX_IDLE_SHARE, [round(s, 4) for s in shares]


def test_the_queue_still_wakes_for_work():
    """The idle wait returns at once when work arrives (`wake`), and within IDLE_MAX_S without it."""
    import asyncio

    from workbench.ui import idle

    async def main():
        shim = idle._AsyncioShim()
        t0 = time.monotonic()
        waiter = asyncio.ensure_future(shim.sleep(idle._FREE))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # asleep, not polling
        idle.wake()
        await asyncio.wait_for(waiter, 0.5)
        woke = time.monotonic() - t0
        t1 = time.monotonic()
        await shim.sleep(idle._FREE)  # nobody wakes it: bounded
        return woke, time.monotonic() - t1

    woke, bounded = asyncio.run(main())
    assert woke < idle.IDLE_MAX_S and bounded >= idle.IDLE_MAX_S * 0.9
    assert idle.quiet_gradio_queue()  # this Gradio's queue is the one the shim expects
