"""The app in a real browser: `python app.py` on 127.0.0.1 driven by Debian's headless Chromium via Playwright.

One page (one Gradio session) walks the product in order: prepare an avatar from a sample, render a
bbox_shift grid and check its previews differ, chat in local mode with a fake microphone and check that
video frames change and audio arrives (and that Stop interrupts), run the example evaluation and see its
table and plot. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time

import pytest

from testkit.browser import (
    REPO,
    app_process,
    chromium_page,
    free_port,
    poll,
    room_noise_wav,
    server_report,
    shot,
    text,
    video_sample,
    wait_text,
)

pytestmark = pytest.mark.browser

SERVER_START_S = 240
PREP_FRAMES = 25


@pytest.fixture(scope="module")
def server(tmp_path_factory, samples_dir):
    tmp = tmp_path_factory.mktemp("app-server")
    port = free_port()
    env = dict(os.environ)
    env.update(
        WORKBENCH_CACHE_DIR=str(tmp / "cache"),
        WORKBENCH_RUNS_DIR=str(tmp / "runs"),
        WORKBENCH_MODELS_DIR=str(tmp / "models"),
        WORKBENCH_SAMPLES_DIR=str(samples_dir),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        GRADIO_ANALYTICS_ENABLED="False",
    )
    env.pop("OPENAI_API_KEY", None)
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
    log = tmp / "server.log"
    with app_process(cmd, REPO, env, url, log, SERVER_START_S, "app_server.log") as proc:
        yield url, (lambda: server_report(proc, log))


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    # The fake microphone plays a near-silent hiss: live input, below the local voice's speech threshold.
    mic = room_noise_wav(tmp_path_factory.mktemp("mic") / "hiss.wav", seconds=2, level=5e-4)
    url, explain = server
    with chromium_page(url, mic) as pg:
        pg.explain = explain  # a wait that times out reports the server's threads and log (testkit.browser)
        pg.wait_for_selector("#prep-button", timeout=60_000)
        yield pg


def _image_hashes(page, selector: str) -> list[str]:
    out = []
    for src in page.locator(selector).evaluate_all("els => els.map(e => e.src)"):
        body = page.request.get(src).body()
        assert len(body) > 1000, f"preview {src} is empty"
        out.append(hashlib.sha256(body).hexdigest())
    return out


def test_header_says_cpu_and_local_voice(page):
    header = text(page, "#wb-header")
    assert "CPU renderer" in header and "workbench weights download" in header
    assert "local voice" in header and "OPENAI_API_KEY" in header


def test_prepare_avatar_from_a_sample(page):
    page.get_by_text("Preparation parameters").click()
    frames = page.locator("#prep-max-frames input")
    frames.fill(str(PREP_FRAMES))
    frames.press("Tab")
    page.click("#prep-button")
    # This preparation's own summary. The example avatar (100 frames), when its background preparation ends
    # meanwhile, must not take its place (`SessionLocks`).
    wait_text(page, "#prep-summary", f": {PREP_FRAMES} frames (", 180_000)
    summary = text(page, "#prep-summary")
    assert (
        "Measured bbox_shift range" in summary
        and f"{PREP_FRAMES} frames" in summary
        and "yongen.mp4" in summary
        and "CPU renderer" in summary
    )
    overlay = page.locator("#prep-overlay img")
    first = overlay.get_attribute("src")
    assert first
    # Another frame on the slider shows another overlay.
    number = page.locator("#prep-frame input[type=number]")
    number.fill(str(PREP_FRAMES - 1))
    number.press("Enter")
    page.wait_for_function(
        "s => { const i = document.querySelector('#prep-overlay img'); return i && i.src !== s; }",
        arg=first,
        timeout=30_000,
    )
    assert "yongen.mp4" in text(page, "#prep-table")
    page.get_by_text("Preparation parameters").click()  # folded again for the screenshot
    shot(page, "app_prepare")


def test_bbox_shift_grid_shows_distinct_previews(page):
    page.get_by_role("tab", name="bbox_shift tuning").click()
    shifts = page.locator("#tune-shifts textarea, #tune-shifts input").first
    page.wait_for_function("el => el.value.trim().length > 0", arg=shifts.element_handle(), timeout=30_000)
    values = [v for v in shifts.input_value().replace(",", " ").split() if v]
    assert len(values) >= 3, values
    page.click("#tune-run")
    wait_text(page, "#tune-status", "previews", 180_000)
    page.wait_for_function(
        "n => document.querySelectorAll('#tune-gallery img').length >= n", arg=len(values), timeout=30_000
    )
    hashes = _image_hashes(page, "#tune-gallery img")
    assert len(hashes) == len(values)
    assert len(set(hashes)) == len(values), "bbox_shift previews should all differ"
    gallery = text(page, "#tune-gallery")
    assert all(f"bbox_shift={v}" in gallery for v in values)
    shot(page, "app_tuning")
    # Keep one value: the avatar is prepared with it and becomes the current one.
    page.locator("#tune-chosen label").last.click()
    page.click("#tune-save")
    wait_text(page, "#tune-saved", "Saved as avatar", 120_000)
    assert f"bbox_shift {values[-1]}" in text(page, "#tune-saved")


def test_local_chat_streams_video_and_audio(page):
    page.get_by_role("tab", name="Realtime chat").click()
    page.wait_for_selector("#chat-frame iframe", timeout=30_000)
    chat = page.frame_locator("#chat-frame iframe")
    chat.locator("#connect").wait_for(timeout=30_000)
    frame = next(f for f in page.frames if "/rtc/chat" in f.url)
    frame.wait_for_function("window.rtcChat && document.getElementById('mode').options.length > 0", timeout=30_000)
    # The page holds a grant for this session's avatar and offers no choice of others.
    assert "?grant=" in frame.url and "avatar=" not in frame.url
    assert chat.locator("#avatarId").is_hidden() and chat.locator("#avatarId option").count() == 0
    chat.locator("#mode").select_option("echo")
    assert chat.locator("#useMic").is_checked()  # the fake microphone is sent
    chat.locator("#connect").click()
    frame.wait_for_function("window.rtcChat.state.dc && window.rtcChat.state.dc.readyState === 'open'", timeout=60_000)
    frame.wait_for_function("document.getElementById('avatar').videoWidth > 0", timeout=60_000)
    before = frame.evaluate("window.rtcChat.stats()")
    chat.locator("#text").fill(
        "Hello! I am the talking head of this workbench. "
        "I can speak for a while, so that you can interrupt me with the stop button."
    )
    chat.locator("#send").click()
    poll(lambda: frame.evaluate("window.rtcChat.stats()")["totalAudioEnergy"] > 1e-3, 60, "reply audio")
    samples = set()
    for _ in range(6):
        samples.add(video_sample(frame))
        time.sleep(0.3)
    after = frame.evaluate("window.rtcChat.stats()")
    assert after["framesDecoded"] > before["framesDecoded"] + 5
    assert after["audioBytes"] > before["audioBytes"] and after["audioPackets"] > 0
    assert len(samples - {""}) >= 2, "the avatar video should change while it speaks"
    shot(page, "app_chat")
    # Barge-in: Stop cuts the reply off.
    chat.locator("#stop").click()
    frame.wait_for_function("document.getElementById('log').innerText.includes('interrupted')", timeout=30_000)
    chat.locator("#hangup").click()


def test_example_evaluation_shows_table_and_plots(page):
    page.get_by_role("tab", name="Evaluation").click()
    labels = page.locator("#eval-cases label")
    labels.first.wait_for(timeout=30_000)
    for i in range(labels.count()):
        label = labels.nth(i)
        if label.inner_text().strip() != "yongen_eng":
            label.click()  # untick: one generated case keeps the run short
    seconds = page.locator("#eval-seconds input")
    seconds.fill("2")
    seconds.press("Tab")
    page.click("#eval-run")
    wait_text(page, "#eval-summary", "of suite", 300_000)
    summary = text(page, "#eval-summary")
    assert "1 ok, 0 failed" in summary and "ls_determined_rate" in summary
    table = text(page, "#eval-table")
    assert "yongen_eng" in table and "ok" in table
    page.wait_for_selector("#eval-plot-sync_curves img", timeout=30_000)
    assert page.locator("#eval-zip a").first.get_attribute("href").endswith(".zip")
    page.locator("#eval-plot-sync_curves").scroll_into_view_if_needed()
    shot(page, "app_evaluation")
    assert not page.errors, page.errors
