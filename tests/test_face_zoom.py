"""The chat page's face zoom: the server reports the face box as fractions of the frame; the page crops to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_realtime_browser import ARTIFACTS, server  # noqa: F401  (the fixture: a live server with yongen)

STATIC = Path(__file__).parents[1] / "workbench" / "realtime" / "static"


class _Boxes:
    """The two fields face_fraction reads."""

    def __init__(self, boxes, size):
        self.boxes = np.asarray(boxes)
        self.frame_size = size


def test_face_fraction_is_the_median_box_over_the_frame_size():
    from workbench.realtime.server import face_fraction

    boxes = [[100, 200, 300, 500], [110, 210, 310, 510], [500, 500, 700, 900]]  # one outlier frame
    assert face_fraction(_Boxes(boxes, (1000, 800))) == [0.1375, 0.21, 0.3875, 0.51]


def test_chat_page_offers_the_zoom_and_reads_the_face_box():
    html = (STATIC / "chat.html").read_text()
    js = (STATIC / "chat.js").read_text()
    assert 'id="faceZoom"' in html and 'id="zoom"' in html
    assert "answer.face" in js and "drawImage(video, ...zoomRect(" in js


@pytest.mark.browser
def test_chromium_shows_the_face_zoomed(server, tmp_path):  # noqa: F811 (the imported fixture)
    """The shipped page in headless Chromium: with face zoom on, the canvas shows the face region of the live
    video (the server's face box), not a blank canvas."""
    from test_realtime_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    url, _, avatar_id = server
    args = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(f"{url}/rtc/chat?mode=echo&autostart=1&avatar={avatar_id}")
            page.uncheck("#useMic")
            page.wait_for_function(
                "window.rtcChat && window.rtcChat.state.lastStats && window.rtcChat.state.lastStats.framesDecoded > 10",
                timeout=30_000,
            )
            face = page.evaluate("window.rtcChat.state.face")
            page.check("#faceZoom")
            page.wait_for_timeout(800)
            spread = page.evaluate(
                """() => { const c = document.getElementById('zoom');
                  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let lo = 255, hi = 0; for (let i = 0; i < d.length; i += 4) { lo = Math.min(lo, d[i+1]); hi = Math.max(hi, d[i+1]); }
                  return [c.width, c.height, hi - lo]; }"""
            )
            rect = page.evaluate("window.rtcChat.zoomRect(416, 720)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "chat-face-zoom.png"))
            page.evaluate("window.rtcChat.hangup()")
        finally:
            browser.close()
    assert face and 0 <= face[0] < face[2] <= 1 and 0 <= face[1] < face[3] <= 1
    assert spread[0] > 100 and spread[1] > 100 and spread[2] > 60  # a picture, not an empty canvas
    x, y, w, h = rect
    assert w < 416 * 0.8 and abs(w / h - 4 / 5) < 0.01  # a real zoom, at the canvas's aspect
    assert x <= face[0] * 416 and x + w >= face[2] * 416  # the face box is inside the zoomed window
