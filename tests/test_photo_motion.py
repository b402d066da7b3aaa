"""A photo avatar's idle motion: small head sway and blinks, with landmarks that follow the head, so the mouth is
rigged where it really is in every frame."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.avatars import photo_motion as pm


@pytest.fixture(scope="module")
def photo(samples_dir, dlib_detector):
    from workbench.media import read_video

    frames, _ = read_video(samples_dir / "calibration" / "talk5.mp4", max_frames=1)
    det = dlib_detector.detect(frames[0])
    assert det is not None
    return frames[0], det


def test_loop_starts_and_ends_on_the_photo_and_moves_a_little(photo):
    frame, det = photo
    frames, boxes, lms = pm.animate_still(frame, det.box, det.landmarks)
    n = pm.LOOP_FRAMES
    assert frames.shape == (n, *frame.shape) and boxes.shape == (n, 4) and lms.shape == (n, 68, 2)
    # Ping-pong needs no jump at the ends: the first and last frames are the photo.
    assert np.abs(frames[0].astype(int) - frame).max() <= 1 and np.abs(frames[-1].astype(int) - frame).max() <= 1
    shift = np.abs(lms - det.landmarks[None]).max(axis=(1, 2))
    fw = det.box[2] - det.box[0]
    assert 0.01 * fw < shift.max() < 0.05 * fw  # visible, small
    assert np.all(np.abs(np.diff(lms, axis=0)).max(axis=(1, 2)) < 0.01 * fw)  # smooth: no jumps between frames


def test_landmarks_follow_the_moved_head(photo, dlib_detector):
    """The landmarks handed to the renderer are where a detector finds the face on the moved frame (mouth
    included), so a rendered mouth sits on the moved lips: sync is untouched by the sway."""
    frame, det = photo
    frames, _, lms = pm.animate_still(frame, det.box, det.landmarks)
    k = int(np.argmax(np.abs(lms - det.landmarks[None]).max(axis=(1, 2))))  # the frame moved most
    seen = dlib_detector.detect(frames[k])
    assert seen is not None
    moved = np.abs(lms[k, 48:68] - det.landmarks[48:68]).mean()
    err = np.abs(seen.landmarks[48:68] - lms[k, 48:68]).mean()
    base = np.abs(dlib_detector.detect(frame).landmarks[48:68] - det.landmarks[48:68]).mean()
    assert moved > 2.0 and err < base + 1.5, (moved, err, base)


def test_blink_covers_the_eyes_and_leaves_the_mouth(photo):
    frame, det = photo
    frames, _, lms = pm.animate_still(frame, det.box, det.landmarks)
    blink = pm.blink_amount()
    k = int(np.argmax(blink))
    assert blink[k] == pytest.approx(pm.BLINK_DEPTH) and blink[0] == 0.0
    # Against the same head position without the blink, only the eyes change.
    import cv2

    ang, dx, dy, ds = pm.sway()[k]
    c = ((det.box[0] + det.box[2]) / 2, (det.box[1] + det.box[3]) / 2)
    m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), float(ang), 1.0 + float(ds))
    fw = det.box[2] - det.box[0]
    m[:, 2] += [dx * fw, dy * fw]
    moved = cv2.warpAffine(frame, m, frame.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    diff = np.abs(frames[k].astype(int) - moved.astype(int)).sum(axis=2)
    eyes = np.zeros(diff.shape, bool)
    for sl in (slice(36, 42), slice(42, 48)):
        x0, y0 = lms[k, sl].min(axis=0).astype(int)
        x1, y1 = lms[k, sl].max(axis=0).astype(int)
        eyes[y0 : y1 + 1, x0 : x1 + 1] = True
    assert diff[eyes].mean() > 15  # the eyes change
    mouth = np.zeros(diff.shape, bool)
    x0, y0 = lms[k, 48:60].min(axis=0).astype(int)
    x1, y1 = lms[k, 48:60].max(axis=0).astype(int)
    mouth[y0:y1, x0:x1] = True
    assert diff[mouth].max() <= 2  # the mouth does not


def test_a_photo_too_large_for_the_memory_budget_stays_still():
    assert pm.loop_length((1080, 1920, 3)) == min(pm.LOOP_FRAMES, pm.MEMORY_BUDGET // (1080 * 1920 * 3))
    assert pm.loop_length((8000, 8000, 3)) == 0
