"""Comb or teeth (`workbench/evaluation/teeth_structure.py`): an evenly spaced, equally bright drawn row of teeth
scores as a comb; a few broad real-like teeth with uneven separators do not; a mouth with no teeth band is
skipped; and on the renderer, the old drawn teeth read as a comb where the library interior does not."""

from __future__ import annotations

import cv2
import numpy as np

from workbench.evaluation import teeth_structure as ts

CX, CY, HALF_W, GAP = 160, 220, 60, 44  # mouth centre, inner-lip half width and opening (px); eyes 120 px apart


def _landmarks() -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[36:42] = [100, 100]
    lm[42:48] = [220, 100]
    xs = np.linspace(CX - HALF_W, CX + HALF_W, 5)
    lm[[60, 61, 62, 63, 64], 0] = xs
    lm[[60, 67, 66, 65, 64], 0] = xs
    lm[[61, 62, 63], 1] = CY - GAP / 2
    lm[[67, 66, 65], 1] = CY + GAP / 2
    lm[[60, 64], 1] = CY
    lm[48:60] = lm[[60, 61, 62, 63, 64, 64, 65, 66, 67, 60, 60, 61]] + [[-8, 0], [0, -10]] * 6
    return lm


def _mouth(teeth=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A skin-coloured frame whose inner mouth is a dark cavity; `teeth(img, x, y0, y1, rng)` paints a band
    of upper teeth between rows y0 and y1 at columns x (the cavity's left..right)."""
    rng = np.random.default_rng(seed)
    lm = _landmarks()
    img = np.full((320, 320, 3), (150, 170, 210), np.float64)
    lips = np.zeros((320, 320), np.uint8)
    cv2.fillPoly(lips, [np.round(lm[48:60]).astype(np.int32)], 1)
    img[lips > 0] = (120, 110, 190)
    m = np.zeros((320, 320), np.uint8)
    cv2.fillPoly(m, [np.round(lm[60:68]).astype(np.int32)], 1)
    img[m > 0] = (35, 30, 60)
    if teeth is not None:
        band = np.zeros_like(img)
        x = np.arange(CX - HALF_W, CX + HALF_W + 1)
        teeth(band, x, int(CY - GAP / 2), int(CY - GAP / 2 + 0.45 * GAP), rng)
        painted = (band.sum(axis=2) > 0) & (m > 0)
        img[painted] = band[painted]
    img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
    return img, lm


def _comb(img, x, y0, y1, rng, spacing=9):
    """A drawn comb: equally bright teeth, a thin equally dark line every `spacing` px."""
    img[y0:y1, x[0] : x[-1] + 1] = (200, 215, 225)
    for c in range(x[0] + 3, x[-1], spacing):
        img[y0:y1, c] = (120, 130, 135)


def _real_like(img, x, y0, y1, rng):
    """What a talking mouth shows: four broad front teeth of different widths and brightness, separators of very
    different depth (overlap, shadow), darker teeth towards the corners."""
    widths = [14, 24, 26, 22, 16, 18]
    levels = [150, 205, 225, 190, 140, 120]
    c = x[0]
    for w, lv in zip(widths, levels, strict=True):
        img[y0:y1, c : c + w] = (lv * 0.92, lv * 0.97, lv)
        c += w
    for s, depth in zip(np.cumsum(widths)[:-1] + x[0], [10, 70, 25, 5, 40], strict=True):
        img[y0:y1, s - 1 : s + 1] -= depth


def test_a_drawn_comb_scores_as_a_comb():
    img, lm = _mouth(_comb)
    fs = ts.frame_structure(img, lm)
    assert fs.score is not None and fs.score >= 0.6, fs
    assert fs.separators >= ts.DENSITY_RANGE[1]
    pooled = ts.comb_score([img], [lm])
    assert pooled["is_comb"] and pooled["measured_frames"] == 1


def test_a_blurred_noisy_comb_at_chat_size_is_still_a_comb():
    img, lm = _mouth(_comb, seed=1)
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    img = np.clip(img + np.random.default_rng(2).normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    assert ts.frame_structure(img, lm).score >= ts.COMB_THRESHOLD


def test_a_few_broad_uneven_teeth_are_not_a_comb():
    img, lm = _mouth(_real_like)
    fs = ts.frame_structure(img, lm)
    assert fs.score is not None, "the teeth band is visible and must be measured"
    assert fs.score < ts.COMB_THRESHOLD, fs
    assert fs.score < ts.frame_structure(*_mouth(_comb)).score / 2


def test_a_wide_spaced_row_scores_lower_than_a_dense_one():
    # Density is part of the score: the same drawing with three times the spacing has too few separators.
    dense = ts.frame_structure(*_mouth(_comb)).score
    sparse = ts.frame_structure(*_mouth(lambda *a: _comb(*a, spacing=30))).score
    assert sparse < ts.COMB_THRESHOLD < dense


def test_a_uniform_dark_cavity_is_skipped_and_counted():
    img, lm = _mouth(None)
    assert ts.frame_structure(img, lm).score is None
    comb_img, comb_lm = _mouth(_comb)
    closed = _landmarks()
    closed[[61, 62, 63, 65, 66, 67], 1] = CY  # a closed mouth: not an open frame, not counted at all
    pooled = ts.comb_score([img, comb_img, comb_img], [lm, comb_lm, closed])
    assert pooled["open_frames"] == 2 and pooled["skipped_no_teeth"] == 1 and pooled["measured_frames"] == 1
    assert ts.comb_score([img], [lm])["is_comb"] is False and np.isnan(ts.comb_score([img], [lm])["score"])


def test_the_renderer_drawn_teeth_are_a_comb_and_the_library_interior_is_not(yongen_avatar, dlib_detector):
    # One open frame of yongen (opening 0.85), landmarks re-detected on the rendered frame. Measured when written:
    # drawn 0.47, library as footage 0.12, library painted (auto) no teeth band.
    from workbench.lipsync.cpu.frontend import MouthState
    from workbench.lipsync.cpu.renderer import CPURenderer

    scores = {}
    for interior, style in (("drawn", "auto"), ("library", "photo"), ("library", "auto")):
        frame = CPURenderer(interior=interior, interior_style=style).render(yongen_avatar, [0], [MouthState(0.85)])[0]
        det = dlib_detector.detect(frame)
        assert det is not None
        scores[(interior, style)] = ts.frame_structure(frame, det.landmarks.astype(np.float64)).score
    assert scores[("drawn", "auto")] is not None and scores[("drawn", "auto")] >= ts.COMB_THRESHOLD, scores
    for key in (("library", "photo"), ("library", "auto")):
        assert scores[key] is None or scores[key] < ts.COMB_THRESHOLD, scores


def test_the_evaluation_reports_the_comb_in_details_only():
    from workbench.config import SAMPLES_PER_FRAME
    from workbench.evaluation.quality import score_quality

    img, lm = _mouth(_comb)
    q = score_quality([img] * 4, np.stack([lm] * 4), np.zeros(4 * SAMPLES_PER_FRAME, np.float32))
    assert q.details["teeth_comb"]["is_comb"] and q.details["teeth_comb"]["measured_frames"] == 4
    assert "teeth_comb" not in q.row()  # reported, never a gated column
    dark, dlm = _mouth(None)
    q = score_quality([dark] * 2, np.stack([dlm] * 2), np.zeros(2 * SAMPLES_PER_FRAME, np.float32))
    assert q.details["teeth_comb"]["score"] is None and q.details["teeth_comb"]["skipped_no_teeth"] == 2
