"""The still-mouth path resamples the source once, at the frame's own resolution (`lipsync/cpu/fullres.py`): a
fine pattern on the lips of a face larger than the 256x256 crop survives the render; the crop path loses it."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from workbench.lipsync.cpu.frontend import MouthState
from workbench.lipsync.cpu.renderer import CPURenderer

SCALE = 1.6  # the face box grows from ~250 px to ~400 px: the crop now halves fine detail
N = 3
ERODE = 5  # px off the lip polygons' edges, where the drawn interior's feather takes over


def _lip_ring(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(lm[48:60]).astype(np.int32)], 1)
    cv2.fillPoly(m, [np.round(lm[60:68]).astype(np.int32)], 0)
    return cv2.erode(m, np.ones((ERODE, ERODE), np.uint8)) > 0


def _detail(frame: np.ndarray, lm: np.ndarray) -> float:
    """Mean squared Laplacian of the grey image over the lips (outer minus inner lip polygon, eroded)."""
    lap = cv2.Laplacian(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F)
    return float(np.mean(lap[_lip_ring(frame.shape[:2], lm)] ** 2))


@pytest.fixture(scope="module")
def checker_avatar(yongen_avatar):
    """yongen's first frames upscaled 1.6x, a 2-px checker (+-35 grey) on the lips, crops remade as prepared."""
    av = yongen_avatar
    frames, crops = [], []
    boxes = np.round(av.boxes[:N] * SCALE).astype(np.int32)
    lms = (av.landmarks[:N] * SCALE).astype(np.float32)
    for f, lm, (x1, y1, x2, y2) in zip(av.frames[:N], lms, boxes, strict=True):
        f = cv2.resize(f, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
        m = np.zeros(f.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(lm[48:60]).astype(np.int32)], 1)
        m = cv2.dilate(m, np.ones((9, 9), np.uint8)) > 0
        yy, xx = np.mgrid[0 : f.shape[0], 0 : f.shape[1]]
        checker = np.where(((yy // 2) + (xx // 2)) % 2 == 0, 35, -35)
        f = f.astype(np.int32)
        f[m] += checker[m][:, None]
        f = np.clip(f, 0, 255).astype(np.uint8)
        frames.append(f)
        crops.append(cv2.resize(f[y1:y2, x1:x2], (256, 256), interpolation=cv2.INTER_LANCZOS4))
    return dataclasses.replace(
        av,
        avatar_id=av.avatar_id + "-checker",
        frames=np.stack(frames),
        boxes=boxes,
        landmarks=lms,
        has_face=av.has_face[:N].copy(),
        crops=np.stack(crops),
        masks=av.masks[:N].copy(),
        latents=None,
    )


def _ratio(avatar, full_res: bool) -> float:
    r = CPURenderer(full_res=full_res, use_bank=False)
    out = []
    for i in range(N):
        st = MouthState(0.6)
        frame = r.render(avatar, [i], [st])[0]
        target = r.target_landmarks(avatar, i, st)
        out.append(_detail(frame, target) / _detail(avatar.frames[i], avatar.landmarks[i].astype(np.float64)))
    return float(np.mean(out))


def test_a_fine_pattern_on_the_lips_survives_the_still_mouth_render(checker_avatar):
    full, through_crop = _ratio(checker_avatar, True), _ratio(checker_avatar, False)
    # A 4-px-period checker is half the Nyquist frequency: one interpolation at a sub-pixel offset keeps ~0.8 of
    # its energy (measured 0.72 here, lips moved to open 0.6; bicubic); through the crop it is 0.35.
    assert full >= 0.65, f"lips keep {full:.2f} of the source's detail at full resolution"
    assert through_crop < 0.6 * full, f"crop path {through_crop:.2f} vs full resolution {full:.2f}"


def test_full_resolution_pass_changes_nothing_at_rest_and_nothing_outside_the_box(checker_avatar):
    r = CPURenderer(use_bank=False)
    rest = r.render(checker_avatar, [0], [MouthState(0.0)])[0]
    assert np.abs(rest.astype(int) - checker_avatar.frames[0]).max() <= 1
    frame = r.render(checker_avatar, [0], [MouthState(1.0)])[0]
    x1, y1, x2, y2 = checker_avatar.boxes[0]
    outside = np.ones(frame.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(frame[outside], checker_avatar.frames[0][outside])
    # The drawn interior is still there: the inner mouth is darker than the lips it opened between.
    lm = r.target_landmarks(checker_avatar, 0, MouthState(1.0))
    m = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(lm[60:68]).astype(np.int32)], 1)
    lips = _lip_ring(frame.shape[:2], lm)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(float)
    assert grey[m > 0].mean() < grey[lips].mean() - 20
