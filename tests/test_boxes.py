"""MuseTalk's face box and bbox_shift range, against landmarks whose answer is worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.faces.boxes import bbox_range, face_box, format_bbox_range, landmark_box, musetalk_range_line


def hand_landmarks(
    x0: float = 100, x1: float = 200, y28: float = 180, y29: float = 200, y30: float = 215, lowest: float = 300
) -> np.ndarray:
    """68 points spanning x0..x1, lowest y at `lowest` (the chin, point 8), nose bridge at 28/29/30."""
    lm = np.zeros((68, 2), dtype=np.float32)
    lm[:, 0] = np.linspace(x0, x1, 68)
    lm[:, 1] = 250
    lm[17:27, 1] = 170  # brows
    lm[8] = ((x0 + x1) / 2, lowest)
    lm[28, 1], lm[29, 1], lm[30, 1] = y28, y29, y30
    return lm


FRAME = (480, 640, 3)


def test_box_is_mirrored_about_landmark_29():
    # y2 = 300 (chin); half = 300 - 200 = 100; y1 = 200 - 100 = 100; x from the extent 100..200
    assert face_box(hand_landmarks(), FRAME).tolist() == [100, 100, 200, 300]


def test_extra_margin_extends_only_the_bottom_and_is_clipped():
    assert face_box(hand_landmarks(), FRAME, extra_margin=10).tolist() == [100, 100, 200, 310]
    assert face_box(hand_landmarks(lowest=475), FRAME, extra_margin=10).tolist()[3] == 480


@pytest.mark.parametrize(("shift", "y1"), [(20, 140), (-30, 40), (5, 110)])
def test_shift_moves_the_middle_before_mirroring(shift, y1):
    # mid = 200 + shift; half = 300 - mid; y1 = mid - half = 2 * (200 + shift) - 300
    box = face_box(hand_landmarks(), FRAME, bbox_shift=shift)
    assert box.tolist() == [100, y1, 200, 300]


def test_top_is_floored_at_zero():
    # mid = 50, half = 250 → y1 = -200 → 0 (MuseTalk's max(0, ·))
    assert landmark_box(hand_landmarks(), bbox_shift=-150) == (100, 0, 200, 300)


def test_landmarks_are_truncated_like_musetalk_astype_int32():
    lm = hand_landmarks(x0=100.9, x1=200.7, y29=200.8, lowest=300.9)
    # int32 truncation: x 100..200, mid 200, y2 300 → the same box as the integer landmarks
    assert face_box(lm, FRAME).tolist() == [100, 100, 200, 300]


def test_degenerate_box_falls_back_to_the_detector_box():
    # mid = 320 lies below the chin: half = -20, y1 = 340 > y2 → MuseTalk reuses the detector's box
    det = np.array([90.4, 120.2, 210.8, 290.0])
    box = face_box(hand_landmarks(), FRAME, bbox_shift=120, extra_margin=10, detector_box=det)
    assert box.tolist() == [90, 120, 210, 300]
    with pytest.raises(ValueError, match="no detector box"):
        face_box(hand_landmarks(), FRAME, bbox_shift=120)


def test_box_is_clipped_to_the_frame():
    lm = hand_landmarks(x0=-12, x1=700)
    box = face_box(lm, FRAME)
    assert box.tolist() == [0, 100, 640, 300]
    # past the left edge MuseTalk takes the detector's box instead (get_landmark_and_bbox: x1 < 0)
    assert face_box(lm, FRAME, detector_box=np.array([5.0, 90, 600, 310])).tolist() == [5, 90, 600, 310]
    # past the right edge only: the landmark box, clipped (the reference keeps x2 beyond the frame)
    assert face_box(hand_landmarks(x0=10, x1=700), FRAME, detector_box=np.array([5.0, 90, 600, 310]))[0] == 10


def test_recommended_range_is_the_truncated_mean_of_nose_spacings():
    a = hand_landmarks(y28=180, y29=200, y30=215)  # 30-29 = 15, 29-28 = 20
    b = hand_landmarks(y28=178, y29=200, y30=216)  # 30-29 = 16, 29-28 = 22
    wild = hand_landmarks(y28=0, y29=200, y30=400)
    lms = np.stack([a, b, wild])
    # means 15.5 → 15 and 21.0 → 21; the frame without a face does not count
    assert bbox_range(lms, has_face=np.array([True, True, False])) == (-15, 21)
    assert bbox_range(lms[:2]) == (-15, 21)
    assert bbox_range(a) == (-15, 20)
    assert musetalk_range_line((-15, 21), 3) == "Manually adjust range : [ -15~21 ] , the current value: 3"
    assert format_bbox_range((-15, 21)) == "[-15 ~ 21]"
