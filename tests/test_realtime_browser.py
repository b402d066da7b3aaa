"""A real headless Chromium talks to the realtime endpoint over WebRTC (loopback only).

The page is the shipped chat client; the microphone is Chromium's fake capture device playing a WAV;
the avatar is a real prepared sample rendered by the CPU renderer; the voice is the keyless local one.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from testkit.realtime import need_espeak

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Engine:
    def __init__(self, avatar):
        from workbench.lipsync.cpu import CPURenderer

        self.renderer = CPURenderer()
        self.avatar = avatar

    def list_avatars(self):
        return []

    def load_avatar(self, avatar_id):
        raise KeyError(avatar_id)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(yongen_avatar, tmp_path):
    import uvicorn
    from fastapi import FastAPI

    from workbench.config import Settings
    from workbench.realtime.server import mount_realtime

    app = FastAPI()
    manager = mount_realtime(app, Engine(yongen_avatar), Settings(runs_dir=tmp_path / "runs"), open_avatars=True)
    manager.add_avatar(yongen_avatar)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", manager, yongen_avatar.avatar_id
    srv.should_exit = True
    thread.join(timeout=15)


def _quiet_wav(path: Path) -> Path:
    # Room noise around -60 dBFS: a live microphone, but nothing the local VAD takes for speech.
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal(48_000 * 3) * 0.001).astype(np.float32), 48_000, subtype="PCM_16")
    return path


def test_chromium_receives_25fps_video_and_audio_for_a_local_reply(server, tmp_path):
    need_espeak()
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, manager, avatar_id = server
    wav = _quiet_wav(tmp_path / "mic.wav")
    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{url}/rtc/chat?mode=echo&autostart=1&avatar={avatar_id}")
            page.wait_for_function(
                "window.rtcChat && window.rtcChat.state.dc && window.rtcChat.state.dc.readyState === 'open'",
                timeout=30_000,
            )
            page.wait_for_function(
                "window.rtcChat.state.lastStats && window.rtcChat.state.lastStats.framesDecoded > 25", timeout=30_000
            )
            stats = lambda: page.evaluate("window.rtcChat.stats()")  # noqa: E731
            idle = stats()
            time.sleep(1.5)
            idle_end = stats()  # 1.5 s of the idle loop, before any reply exists
            page.fill(
                "#text",
                "Hello! I am speaking to you from a headless browser. This reply is long enough "
                "to measure the frame rate while my mouth moves.",
            )
            page.click("#send")
            page.wait_for_function("document.querySelector('#log .assistant') !== null", timeout=20_000)
            time.sleep(0.5)
            a = stats()
            time.sleep(3.0)
            b = stats()
            page.screenshot(path=str(ARTIFACTS / "realtime-browser.png"))
            sid = page.evaluate("window.rtcChat.state.sessionId")
            session_stats = manager.sessions[sid].stats()
            page.evaluate("window.rtcChat.hangup()")
        finally:
            browser.close()
    fps = (b["framesDecoded"] - a["framesDecoded"]) / ((b["t"] - a["t"]) / 1000)
    assert fps >= 24, (fps, session_stats)
    assert b["audioPackets"] - a["audioPackets"] >= 120  # 50 Opus packets a second
    # Energy per second while the reply plays against the idle loop's (silence): the reply's audio arrived.
    speech_rate = (b["totalAudioEnergy"] - a["totalAudioEnergy"]) / ((b["t"] - a["t"]) / 1000)
    idle_rate = (idle_end["totalAudioEnergy"] - idle["totalAudioEnergy"]) / ((idle_end["t"] - idle["t"]) / 1000)
    assert speech_rate > 0 and speech_rate > 10 * idle_rate, (speech_rate, idle_rate)
    assert b["frameHeight"] == 720 and b["frameWidth"] == 416  # 704x1216 scaled to the 720-line cap
    assert session_stats["mic_seconds"] > 1.0  # the fake microphone reached the server
