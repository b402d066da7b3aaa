"""Helpers for the tests that drive a real headless Chromium against `python app.py` (Playwright)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the repository root
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # A fake microphone (and the permission prompt answered yes) for the realtime chat.
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    import urllib.error
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise TimeoutError(f"app.py did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, needle: str, timeout_ms: int) -> None:
    page.wait_for_function(
        "([sel, needle]) => { const el = document.querySelector(sel); return el && el.innerText.includes(needle); }",
        arg=[selector, needle],
        timeout=timeout_ms,
    )


def poll(condition, timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.25)


def video_sample(frame) -> str:
    return frame.evaluate("""() => {
        const v = document.getElementById('avatar');
        if (!v || !v.videoWidth) return '';
        const c = document.createElement('canvas');
        c.width = 64; c.height = Math.round(64 * v.videoHeight / v.videoWidth);
        const g = c.getContext('2d');
        g.drawImage(v, 0, 0, c.width, c.height);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data).join(',');
    }""")
