"""The painted interior (`lipsync/cpu/style.py`): a painting is measured as painted and a photo as photographic,
the painted interior takes its colours from the avatar's own eyes and lips, and the choice is a setting."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from workbench.lipsync.cpu import interior as mi
from workbench.lipsync.cpu import style
from workbench.lipsync.cpu.frontend import MouthState
from workbench.lipsync.cpu.renderer import CPURenderer, _crop_landmarks


def test_the_painting_is_painted_and_the_photo_is_not(yongen_avatar, sun_avatar):
    painted, score = style.is_painted(yongen_avatar.crops, _crop_landmarks(yongen_avatar))
    assert painted, f"yongen scored {score:.2f}"
    photo, score_p = style.is_painted(sun_avatar.crops, _crop_landmarks(sun_avatar))
    assert not photo, f"sun scored {score_p:.2f}"
    # The same photo made into a painting by hand (edge-preserving flattening) measures as painted.
    stylised = np.stack([cv2.stylization(c, sigma_s=40, sigma_r=0.3) for c in sun_avatar.crops[:10]])
    assert style.is_painted(stylised, _crop_landmarks(sun_avatar)[:10])[0]


def _hand_made_face() -> tuple[np.ndarray, np.ndarray]:
    """A flat skin-coloured face with pale-blue eye whites, dark brows and red lips at known landmarks."""
    from tests.test_mouth_interior import _face_landmarks

    lm = _face_landmarks(0.0)
    lm[36:42] = np.array([[88, 100], [94, 95], [106, 95], [112, 100], [106, 105], [94, 105]])
    lm[42:48] = lm[36:42] + [60, 0]
    lm[17:22] = np.stack([np.linspace(86, 114, 5), np.full(5, 85)], axis=1)
    lm[22:27] = lm[17:22] + [60, 0]
    lm[48:60] = np.array(
        [[100, 170], [110, 162], [122, 160], [130, 162], [138, 160], [150, 162], [160, 170], [150, 180]]
        + [[138, 183], [130, 184], [122, 183], [110, 180]],
        float,
    )
    img = np.full((256, 256, 3), (150, 170, 210), np.uint8)
    for eye in (lm[36:42], lm[42:48]):
        cv2.fillPoly(img, [np.round(eye).astype(np.int32)], (245, 235, 225))
    for brow in (lm[17:22], lm[22:27]):
        cv2.polylines(img, [np.round(brow).astype(np.int32)], False, (30, 30, 40), 3)
    cv2.fillPoly(img, [np.round(lm[48:60]).astype(np.int32)], (90, 80, 200))
    return img, lm


def test_the_palette_is_the_avatar_own_colours():
    img, lm = _hand_made_face()
    pal = style.avatar_palette(img, lm)
    lum = np.array([0.114, 0.587, 0.299])
    assert abs(float(pal.teeth @ lum) - float(np.array([245, 235, 225]) @ lum)) < 8  # eye-white lightness
    assert np.linalg.norm(pal.tongue - [90, 80, 200]) < 10  # the lip red
    assert pal.cavity @ lum < 0.6 * (pal.tongue @ lum) and pal.cavity[2] > pal.cavity[0]  # a dark red, not grey


def test_a_painted_tile_uses_only_the_palette_colours_and_keeps_the_teeth_where_the_footage_has_them():
    lib = mi.bundled_library()
    pal = style.PaintedPalette(
        teeth=np.array([230.0, 235.0, 240.0]), cavity=np.array([30.0, 25.0, 70.0]), tongue=np.array([90, 80, 200.0])
    )
    k = int(np.argmax(lib.opening))
    out = style.paint_tile(lib.tiles[k].astype(np.float32), pal)
    px = out.reshape(-1, 3)
    # Every pixel is one of the three colours times a shade: its direction is a palette colour's.
    dirs = np.stack([c / np.linalg.norm(c) for c in (pal.teeth, pal.cavity, pal.tongue)])
    cos = (px / np.maximum(np.linalg.norm(px, axis=1, keepdims=True), 1e-6)) @ dirs.T
    assert (cos.max(axis=1) > 0.999).mean() > 0.999
    # The footage's bright upper teeth become the palette's teeth in the tile's upper rows, not in its lower.
    teeth = cos[:, 0].reshape(out.shape[:2]) > 0.999
    assert teeth[: out.shape[0] // 3].mean() > 0.2 and teeth[-out.shape[0] // 4 :].mean() < 0.05
    # Few flat tones (a painting), not the footage's grain.
    assert len(np.unique(np.round(px).astype(int), axis=0)) < 60


def test_auto_paints_the_painting_and_keeps_the_real_interior_for_a_photo(yongen_avatar, sun_avatar):
    r = CPURenderer()
    r.render(yongen_avatar, [0], [MouthState(0.8)])
    r.render(sun_avatar, [0], [MouthState(0.8)])
    assert r._rig(yongen_avatar).interior(yongen_avatar).painted is not None
    assert r._rig(sun_avatar).interior(sun_avatar).painted is None
    forced = CPURenderer(interior_style="photo")
    forced.render(yongen_avatar, [0], [MouthState(0.8)])
    assert forced._rig(yongen_avatar).interior(yongen_avatar, "photo").painted is None
    # The setting changes the picture: the painted interior's colours are not the footage's.
    a = r.render(yongen_avatar, [0], [MouthState(0.9)])[0]
    b = forced.render(yongen_avatar, [0], [MouthState(0.9)])[0]
    assert np.abs(a.astype(int) - b).max() > 40


def test_a_bad_style_setting_is_refused():
    with pytest.raises(ValueError, match="interior_style"):
        CPURenderer(interior_style="oil")
