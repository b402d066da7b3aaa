"""The real mouth interior: the bundled library, the unwrap/lookup geometry, colour following the face's light, and
the drawn fallback when the library cannot be read."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.lipsync.cpu import interior as mi
from workbench.lipsync.cpu.geometry import MouthLens


def _face_landmarks(gap: float) -> np.ndarray:
    """A frontal 68-point layout (eyes 60 px apart) with inner lips `gap` px apart."""
    lm = np.zeros((68, 2))
    lm[36:42] = [100, 100]
    lm[42:48] = [160, 100]
    xs = np.linspace(105, 155, 5)
    lm[[60, 61, 62, 63, 64], 0] = xs
    lm[[60, 67, 66, 65, 64], 0] = xs
    lm[[61, 62, 63], 1] = 170 - gap / 2
    lm[[67, 66, 65], 1] = 170 + gap / 2
    lm[[60, 64], 1] = 170
    lm[48:60] = lm[[60, 61, 62, 63, 64, 64, 65, 66, 67, 60, 60, 61]] + [[0, 0]] * 12
    return lm


def test_bundled_library_is_small_real_and_spans_the_openings():
    assert mi.LIBRARY_PATH.stat().st_size < 300 * 1024
    lib = mi.bundled_library()
    assert len(lib) >= 10 and lib.tiles.shape[1:] == (mi.GRID_H, mi.GRID_W, 3)
    assert lib.opening.max() - lib.opening.min() > 0.15  # from barely parted to wide open (gap / iod)
    # Real footage: teeth are bright, the inside has darks, and no tile is a flat colour.
    assert all(t.std() > 10 for t in lib.tiles)
    wide = lib.tiles[int(np.argmax(lib.opening))].astype(float).mean(axis=2)
    assert wide.max() > 120 and wide.min() < 60


def test_unwrap_then_lookup_puts_each_pixel_back_where_it_was():
    """The tile is the opening in (u, t) coordinates: unwrapping an image and mapping the tile back into the same
    lips reproduces the image inside them (a smooth test pattern, so resampling error stays small)."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    img = np.stack([xx, yy, 0.5 * (xx + yy)], axis=2).clip(0, 255).astype(np.uint8)
    lm = _face_landmarks(gap=24.0)
    tile = mi.unwrap(img, lm)

    class _Tiles:
        lib = type("L", (), {"opening": np.array([0.4]), "aspect": np.array([1.0])})()
        chosen = type("C", (), {"entries": np.array([0])})()

        def tile(self, k):
            return tile.astype(np.float32)

    ex, ey = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    lens = MouthLens(lm, ex, ey)
    u, v = lens.coords(256, 256)
    back = mi.interior_fill(_Tiles(), lens, u, v, 60.0)
    inside = (np.abs(u) < 0.8 * lens.half_width) & (v > lens.upper(u) + 2) & (v < lens.lower(u) - 2)
    assert inside.sum() > 300
    assert np.abs(back[inside] - img[inside].astype(np.float32)).mean() < 3.0


def test_interior_follows_the_light_of_the_face():
    lib = mi.bundled_library()
    lip = lib.lip.mean(axis=0)
    bright = mi.choose_for_avatar(lib, np.array([170.0, 185.0, 215.0]), lip, detail=10.0)
    dark = mi.choose_for_avatar(lib, np.array([50.0, 55.0, 75.0]), lip, detail=10.0)
    assert bright.gain[0] > dark.gain[0]
    t_bright = mi.InteriorTiles(lib, bright).tile(0)
    t_dark = mi.InteriorTiles(lib, dark).tile(0)
    assert t_bright.mean() > t_dark.mean() + 10
    # A face smoother than the footage blurs the tile, a crisper one sharpens it.
    assert mi.choose_for_avatar(lib, lib.skin.mean(axis=0), lip, detail=1.0).blur_sigma > 0.5
    assert mi.choose_for_avatar(lib, lib.skin.mean(axis=0), lip, detail=50.0).sharpen > 0.5


def test_missing_library_falls_back_to_the_drawn_interior(yongen_avatar, monkeypatch, tmp_path):
    from workbench.lipsync.cpu.frontend import MouthState
    from workbench.lipsync.cpu.renderer import CPURenderer

    monkeypatch.setattr(mi, "_LIB", None)
    monkeypatch.setattr(mi, "LIBRARY_PATH", tmp_path / "none.npz")
    with pytest.raises(mi.InteriorLibraryError, match="not found"):
        mi.InteriorLibrary.load(tmp_path / "none.npz")
    lib_frame = CPURenderer(interior="library").render(yongen_avatar, [3], [MouthState(0.9)])[0]
    drawn = CPURenderer(interior="drawn").render(yongen_avatar, [3], [MouthState(0.9)])[0]
    assert np.array_equal(lib_frame, drawn)
    with pytest.raises(ValueError, match="interior"):
        CPURenderer(interior="painted")
