"""The chat page's face zoom: the server reports the face box as fractions of the frame; the page crops to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
