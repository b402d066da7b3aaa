"""Helpers for the tests that drive a real headless Chromium against `python app.py` (Playwright)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from testkit.processes import stop

REPO = Path(__file__).resolve().parents[1]  # the repository root
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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


def room_noise_wav(path: Path, seconds: float, level: float, seed: int = 0, rate: int = 48_000) -> Path:
    """White noise at `level` (RMS, full scale 1) for the fake microphone: a live input that no VAD takes for speech."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    sf.write(path, (rng.standard_normal(int(rate * seconds)) * level).astype(np.float32), rate, subtype="PCM_16")
    return path


@contextlib.contextmanager
def app_process(cmd: list[str], cwd: Path, env: dict, url: str, log: Path, timeout: float, artifact: str) -> Iterator:
    """`cmd` (an app.py) running until the block ends, once `url` answers; its log is copied to test-artifacts/."""
    if shutil.which("ffmpeg") is None:
        import pytest

        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(url, proc, log, timeout)
        yield proc
    finally:
        stop(proc)
        if log.exists():
            ARTIFACTS.mkdir(exist_ok=True)
            shutil.copyfile(log, ARTIFACTS / artifact)


@contextlib.contextmanager
def chromium_page(url: str, mic: Path | None = None, viewport: tuple[int, int] = (1400, 1000)) -> Iterator:
    """A headless Chromium page at `url` (skips when Chromium or Playwright is missing); `mic` is the WAV the fake
    microphone plays. Uncaught page errors collect in `page.errors`."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    args = [*CHROMIUM_ARGS, *([f"--use-file-for-fake-audio-capture={mic}"] if mic else [])]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
            page.errors = []
            page.on("pageerror", lambda e: page.errors.append(str(e)))
            page.goto(url)
            yield page
        finally:
            browser.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def text(page, selector: str) -> str:
    return page.locator(selector).inner_text()


def wait_text(page, selector: str, needle: str, timeout_ms: int) -> None:
    """Wait until `selector`'s text contains `needle`. On a timeout the failure says what the element, the page
    and (when the page fixture set `page.explain`) the server were doing instead."""
    try:
        page.wait_for_function(
            "([sel, needle]) => { const el = document.querySelector(sel); return el && el.innerText.includes(needle); }",
            arg=[selector, needle],
            timeout=timeout_ms,
        )
    except Exception as e:
        if type(e).__name__ != "TimeoutError":
            raise
        shown = page.locator(selector).all_inner_texts()
        toasts = page.locator(".toast-body").all_inner_texts()
        explain = getattr(page, "explain", None)
        raise AssertionError(
            f"{selector} did not show {needle!r} within {timeout_ms / 1000:.0f} s; it shows {shown!r}; "
            f"toasts {toasts!r}; page errors {page.errors!r}" + (f"\n{explain()}" if explain else "")
        ) from None


def server_report(proc: subprocess.Popen, log: Path, wait_s: float = 2.0) -> str:
    """The end of an app.py's log, after asking it for every thread's stack (app.py writes them on SIGUSR1):
    what a job that never finished was waiting for."""
    if proc.poll() is None and hasattr(signal, "SIGUSR1"):
        proc.send_signal(signal.SIGUSR1)
        time.sleep(wait_s)
    tail = log.read_text(errors="replace")[-12_000:] if log.exists() else "(no log)"
    return f"--- the server's log (end) ---\n{tail}"


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
