"""The person's gamut for a face that never opens (`mouth_quality.build_person_gamut`): lips and skin in rg
chromaticity plus the neutral and dark range every mouth interior has. A flat maroon cavity scores lower than a
real interior; the person's own open mouth scores high against their own closed frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workbench.evaluation import mouth_quality as mq

SKIN, LIPS = (150, 170, 210), (120, 110, 190)


def _landmarks(gap: float) -> np.ndarray:
    """A frontal 68-point face (eyes 60 px apart), jaw and nose base set, inner lips `gap` px apart."""
    lm = np.zeros((68, 2))
    lm[36:42] = [100, 100]
    lm[42:48] = [160, 100]
    t = np.linspace(-1.0, 1.0, 11)
    lm[3:14] = np.stack([130 + 75 * t, 150 + 70 * np.sqrt(1 - 0.8 * t**2)], axis=1)
    lm[31:36] = np.stack([np.linspace(115, 145, 5), np.full(5, 140)], axis=1)
    xs = np.linspace(105, 155, 5)
    lm[[60, 61, 62, 63, 64], 0] = xs
    lm[[60, 67, 66, 65, 64], 0] = xs
    lm[[61, 62, 63], 1] = 170 - gap / 2
    lm[[67, 66, 65], 1] = 170 + gap / 2
    lm[[60, 64], 1] = 170
    lm[48:60] = lm[[60, 61, 62, 63, 64, 64, 65, 66, 67, 60, 60, 61]] + [
        [-6, 0],
        [0, -8],
        [0, -9],
        [0, -8],
        [6, 0],
        [6, 0],
        [0, 8],
        [0, 9],
        [0, 8],
        [-6, 0],
        [-6, 0],
        [0, -8],
    ]
    return lm


def _face(gap: float, interior=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A lit face (skin shaded top to bottom, a little noise) with lips; `interior(img, mask)` paints the mouth."""
    rng = np.random.default_rng(seed)
    lm = _landmarks(gap)
    shade = np.linspace(1.05, 0.8, 256)[:, None, None]
    img = np.clip(np.asarray(SKIN, float)[None, None] * shade + rng.normal(0, 3, (256, 256, 3)), 0, 255)
    lips = np.zeros((256, 256), np.uint8)
    cv2.fillPoly(lips, [np.round(lm[48:60]).astype(np.int32)], 1)
    img[lips > 0] = (np.asarray(LIPS, float)[None] * shade[:, :, 0].repeat(256, axis=1)[lips > 0][:, None]) / 0.9
    img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    if interior is not None:
        m = np.zeros((256, 256), np.uint8)
        cv2.fillPoly(m, [np.round(lm[60:68]).astype(np.int32)], 1)
        interior(img, m > 0, rng)
    return img, lm


def _real_interior(img, m, rng):
    """What an open mouth shows: lip-hued shadow at depth, ivory upper teeth, a tongue of the lips' hue."""
    ys, xs = np.nonzero(m)
    top = ys.min()
    rel = (ys - top) / max(ys.max() - top, 1)
    col = np.where(rel[:, None] < 0.3, [205, 212, 222], np.where(rel[:, None] > 0.75, [95, 90, 160], [40, 36, 62]))
    img[ys, xs] = np.clip(col + rng.normal(0, 2, (len(ys), 3)), 0, 255)


def _maroon(img, m, rng):
    img[m] = (40, 40, 110)


def test_a_flat_maroon_cavity_scores_lower_than_a_real_interior():
    closed = [_face(0.0, seed=s) for s in range(3)]
    gamut = mq.build_person_gamut([f for f, _ in closed], [lm for _, lm in closed])
    real = [_face(24.0, _real_interior, seed=s) for s in range(3, 6)]
    flat = [_face(24.0, _maroon, seed=s) for s in range(3, 6)]
    s_real = mq.person_gamut_share([f for f, _ in real], [lm for _, lm in real], gamut)
    s_flat = mq.person_gamut_share([f for f, _ in flat], [lm for _, lm in flat], gamut)
    assert s_real["open_frames"] == 3 and s_flat["open_frames"] == 3
    assert s_real["share"] >= 0.9, s_real
    assert s_flat["share"] <= 0.2, s_flat
    # The old lightness-bound BGR palette of lips and skin could not tell them apart this well.
    pal = mq.build_face_palette([f for f, _ in closed], [lm for _, lm in closed])
    assert mq.colour_share([f for f, _ in real], [lm for _, lm in real], pal)["share"] < 0.6


def test_neutral_and_dark_follow_the_rules_and_odd_hues_do_not():
    closed = [_face(0.0, seed=s) for s in range(2)]
    gamut = mq.build_person_gamut([f for f, _ in closed], [lm for _, lm in closed])
    px = np.array(
        [
            [200, 200, 200],  # grey teeth: neutral
            [10, 12, 20],  # too dark to have a hue
            [LIPS[0] // 2, LIPS[1] // 2, LIPS[2] // 2],  # the lips in shadow: same chromaticity
            [60, 200, 60],  # green
            [200, 80, 60],  # blue
        ],
        np.uint8,
    )
    assert mq.in_person_gamut(px, gamut).tolist() == [True, True, True, False, False]


@pytest.mark.parametrize("clip", ["talk1"])
def test_the_person_own_open_mouth_scores_high_against_their_closed_frames(samples_dir, dlib_detector, clip):
    """talk1 is a design clip of the gamut (bench/bench_interior.py --gamut-calibration reports the held-out ones)."""
    from workbench.avatars.model import PrepParams
    from workbench.avatars.pipeline import prepare_avatar
    from workbench.lipsync.cpu.bank import raw_openness

    av = prepare_avatar(samples_dir / "calibration" / f"{clip}.mp4", PrepParams(max_frames=120), dlib_detector)
    lm = av.landmarks.astype(np.float64)
    o = raw_openness(lm)
    closed, opened = np.flatnonzero(o < 0.08), np.flatnonzero(o >= mq.OPEN_MIN)
    assert len(closed) >= 3 and len(opened) >= 10
    gamut = mq.build_person_gamut([av.frames[i] for i in closed], [lm[i] for i in closed])
    own = mq.person_gamut_share([av.frames[i] for i in opened], [lm[i] for i in opened], gamut)
    assert own["share"] >= 0.8, own
