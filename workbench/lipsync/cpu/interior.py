"""Real mouth interiors for faces whose own frames never open: teeth, tongue and the dark of the mouth cut
from real footage, not painted.

A small bundled library (`assets/mouth_interiors.npz`, built by `scripts/build_mouth_interiors.py` from
talking-head clips whose licence allows it; `assets/README.md` names them) holds open mouths *unwrapped*
between the lips: column u runs from the left to the right inner mouth corner, row t from the upper inner
lip (0) to the lower one (1). Any target opening is then a lookup: every pixel inside the target's inner lips
gets its (u, t) from the two lip curves (`MouthLens`) and one bilinear sample of the tile, so the interior
follows the target lips however they are shaped.

Per avatar one source clip is used for every frame (the same teeth, never a different person's from one
frame to the next), the one whose lips and skin are closest in colour; per frame the entry whose opening and
aspect match the target. Colour follows the avatar's light: each channel is scaled by the ratio of the
avatar's skin colour to the source's (exposure fully, tint half), and where the avatar's mouth region is
smoother than the tile (a painting, a soft photo) the tile is blurred to the avatar's detail level, so the
interior is in the avatar's own style.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workbench.config import CROP_SIZE
from workbench.lipsync.cpu import style
from workbench.lipsync.cpu.geometry import FrameRig, MouthLens, bbox, feather, fill_poly

LIBRARY_PATH = Path(__file__).resolve().parent / "assets" / "mouth_interiors.npz"
GRID_W, GRID_H = 96, 40  # unwrapped tile: columns across the mouth, rows from upper to lower inner lip
U_SPAN = 0.96  # the tile covers this share of the half width either side (the corners are lip, not mouth)
CAST_SHARE = 0.5  # of the skin-to-skin cast difference applied (in full, a yellow painted skin made an olive mouth)
CAST_MAX = 12.0  # largest shift of a or b (Lab units) from the footage's colour cast to the avatar's
# Lightness gain limits: the inside of a mouth is lit by what gets past the lips, so it follows a brighter face
# only a little (measured: at the full skin ratio, 1.6 on yongen, the open mouth came out lighter than the lips).
L_GAIN_RANGE = (0.6, 1.15)
SHARPEN_MAX, SHARPEN_SIGMA = 1.0, 1.0  # unsharp mask on a tile softer than the avatar: largest amount, radius
OPEN_WEIGHT, ASPECT_WEIGHT = 1.0, 0.35  # entry choice: opening (gap / iod) and aspect (height / half width)


class InteriorLibraryError(ValueError):
    """The bundled interior library is missing or malformed."""


@dataclass(frozen=True)
class InteriorLibrary:
    tiles: np.ndarray  # (N, GRID_H, GRID_W, 3) uint8 BGR
    opening: np.ndarray  # (N,) inner-lip gap at the middle / interocular distance
    aspect: np.ndarray  # (N,) gap / half width of the opening
    skin: np.ndarray  # (N, 3) BGR skin beside the source mouth (its light)
    lip: np.ndarray  # (N, 3) BGR mean of the source lips
    lip_detail: np.ndarray  # (N,) Laplacian std of the source's upper-lip band at tile scale (`lip_detail`)
    source: np.ndarray  # (N,) int: which source clip
    source_names: tuple[str, ...]

    @classmethod
    def load(cls, path: Path = LIBRARY_PATH) -> InteriorLibrary:
        if not path.is_file():
            raise InteriorLibraryError(f"mouth interior library not found at {path}")
        with np.load(path, allow_pickle=False) as z:
            tiles = z["tiles"]
            if tiles.ndim != 4 or tiles.shape[1:] != (GRID_H, GRID_W, 3) or tiles.dtype != np.uint8:
                raise InteriorLibraryError(f"{path}: tiles must be (N, {GRID_H}, {GRID_W}, 3) uint8")
            return cls(
                tiles=tiles,
                opening=z["opening"].astype(np.float64),
                aspect=z["aspect"].astype(np.float64),
                skin=z["skin"].astype(np.float64),
                lip=z["lip"].astype(np.float64),
                lip_detail=z["lip_detail"].astype(np.float64),
                source=z["source"].astype(np.int64),
                source_names=tuple(str(s) for s in z["source_names"]),
            )

    def __len__(self) -> int:
        return len(self.tiles)


_LIB: InteriorLibrary | None = None
_LIB_LOCK = threading.Lock()


def bundled_library() -> InteriorLibrary:
    """The bundled library, loaded once per process (a few hundred KB)."""
    global _LIB
    with _LIB_LOCK:
        if _LIB is None:
            _LIB = InteriorLibrary.load(LIBRARY_PATH)
        return _LIB


def unwrap(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(GRID_H, GRID_W, 3) the inside of the mouth of `image` (68 landmarks `lm` in its pixels), unwrapped."""
    ex, ey = _axes(lm)
    lens = MouthLens(lm, ex, ey)
    u = np.linspace(-U_SPAN, U_SPAN, GRID_W) * lens.half_width
    t = np.linspace(0.0, 1.0, GRID_H)
    up, lo = lens.upper(u), lens.lower(u)
    v = up[None, :] + t[:, None] * (lo - up)[None, :]
    uu = np.broadcast_to(u[None, :], v.shape)
    x = lens.c[0] + (uu + lens.u0) * ex[0] + v * ey[0]
    y = lens.c[1] + (uu + lens.u0) * ex[1] + v * ey[1]
    return cv2.remap(image, x.astype(np.float32), y.astype(np.float32), cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)


def _axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)
    ex = v / max(float(np.hypot(*v)), 1e-6)
    return ex, np.array([-ex[1], ex[0]])


@dataclass(frozen=True)
class AvatarInterior:
    """What one avatar takes from the library: its source clip's entries, colour gains and detail level."""

    entries: np.ndarray  # indices into the library, sorted by opening
    gain: np.ndarray  # (3,) Lab gains: lightness, a, b
    shift: np.ndarray  # (3,) Lab offsets added after the gains (the colour cast)
    blur_sigma: float  # Gaussian blur of the tile (tile pixels) that brings it down to the avatar's detail …
    sharpen: float = 0.0  # … or the unsharp-mask amount that brings it up (the library footage is soft)


def choose_for_avatar(lib: InteriorLibrary, skin_bgr: np.ndarray, lip_bgr: np.ndarray, detail: float) -> AvatarInterior:
    """The source clip whose lips and skin are closest to the avatar's (in colour), its colour gain and blur.
    `detail`: the avatar's `lip_detail` (what the tile's detail is matched to)."""
    best, best_d = 0, np.inf
    for s in range(len(lib.source_names)):
        m = lib.source == s
        d = float(
            np.linalg.norm(lib.skin[m].mean(axis=0) - skin_bgr) + np.linalg.norm(lib.lip[m].mean(axis=0) - lip_bgr)
        )
        if d < best_d:
            best, best_d = s, d
    entries = np.flatnonzero(lib.source == best)
    entries = entries[np.argsort(lib.opening[entries])]
    # Colour in Lab: lightness scaled by the skin's (the light on the face), and the footage's colour cast
    # replaced by the avatar's: a and b shifted by the difference of their skins' (a white balance on skin).
    # Scaling chroma instead (by the lips') amplified the footage's grey-green shadows into a green mouth.
    src_skin, dst_skin = _lab(lib.skin[entries].mean(axis=0)), _lab(skin_bgr)
    l_gain = float(np.clip(dst_skin[0] / max(src_skin[0], 1.0), *L_GAIN_RANGE))
    gain = np.array([l_gain, 1.0, 1.0])
    shift = np.array([0.0, *np.clip(CAST_SHARE * (dst_skin[1:] - src_skin[1:]), -CAST_MAX, CAST_MAX)])
    src_detail = float(np.median(lib.lip_detail[entries]))
    # Both measured on the upper lip at tile scale: how much smoother (or crisper) the avatar is than the
    # footage. Blurring by sigma scales a fine texture's Laplacian roughly by 1 / (1 + sigma^2); an unsharp mask
    # of amount a by about 1 + a. Only the excess is undone, either way, within limits.
    ratio = src_detail / max(detail, 1e-3)
    blur = float(np.sqrt(max(ratio - 1.0, 0.0))) if ratio > 1.25 else 0.0
    sharpen = float(np.clip(1.0 / ratio - 1.0, 0.0, SHARPEN_MAX)) if ratio < 0.8 else 0.0
    return AvatarInterior(entries=entries, gain=gain, shift=shift, blur_sigma=min(blur, 2.5), sharpen=sharpen)


def _lab(bgr: np.ndarray) -> np.ndarray:
    """One BGR colour (0..255) in Lab (L 0..100)."""
    px = np.asarray(bgr, np.float32).reshape(1, 1, 3) / 255.0
    return cv2.cvtColor(px, cv2.COLOR_BGR2Lab)[0, 0].astype(np.float64)


def pick_entry(lib: InteriorLibrary, chosen: AvatarInterior, gap_iod: float, aspect: float) -> int:
    """The entry of the avatar's source clip whose opening and aspect best match the target's."""
    e = chosen.entries
    cost = OPEN_WEIGHT * np.abs(lib.opening[e] - gap_iod) / 0.05 + ASPECT_WEIGHT * np.abs(lib.aspect[e] - aspect) / 0.1
    return int(e[int(np.argmin(cost))])


class InteriorTiles:
    """Per avatar: the colour-matched, detail-matched tiles, prepared once (a few tens of KB)."""

    def __init__(self, lib: InteriorLibrary, chosen: AvatarInterior, painted: style.PaintedPalette | None = None):
        """`painted`: re-paint every tile in this avatar's own colours (`style`), for a painted avatar."""
        self.lib, self.chosen, self.painted = lib, chosen, painted
        self._tiles: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def tile(self, k: int) -> np.ndarray:
        t = self._tiles.get(k)
        if t is None:
            lab = cv2.cvtColor(self.lib.tiles[k].astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
            lab = lab * self.chosen.gain.astype(np.float32) + self.chosen.shift.astype(np.float32)
            lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
            t = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0
            if self.painted is not None:
                # Flat tones with hard edges: neither the footage's grain nor a blur to the painting's detail. Each
                # entry keeps its own shapes (one median shape for all openings measured worse on the quality gate's
                # yongen sync: ls_confidence 0.34 vs 0.40).
                t = style.paint_tile(t, self.painted)
            elif self.chosen.blur_sigma > 0.3:
                t = cv2.GaussianBlur(t, (0, 0), self.chosen.blur_sigma)
            elif self.chosen.sharpen > 0.0:
                t = t + self.chosen.sharpen * (t - cv2.GaussianBlur(t, (0, 0), SHARPEN_SIGMA))
            t = np.clip(t, 0, 255).astype(np.float32)
            with self._lock:
                self._tiles[k] = t
        return t


def interior_fill(tiles: InteriorTiles, lens: MouthLens, u: np.ndarray, v: np.ndarray, iod: float) -> np.ndarray:
    """(h, w, 3) float BGR: the library interior mapped into the target opening `lens` at pixel coords (u, v)."""
    gap = lens.height()
    k = pick_entry(tiles.lib, tiles.chosen, gap / max(iod, 1e-6), gap / max(lens.half_width, 1e-6))
    tile = tiles.tile(k)
    up, lo = lens.upper(u), lens.lower(u)
    t = (v - up) / np.maximum(lo - up, 1.0)
    col = (u / (U_SPAN * lens.half_width) + 1.0) * 0.5 * (GRID_W - 1)
    row = np.clip(t, 0.0, 1.0) * (GRID_H - 1)
    return cv2.remap(
        tile, col.astype(np.float32), row.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def paste_interior(face: np.ndarray, lm: np.ndarray, fr: FrameRig, weight: float, tiles: InteriorTiles) -> None:
    """The library interior inside the inner lips of `face` (crop landmarks `lm`), blended by `weight`, in place."""
    lens0 = MouthLens(lm, fr.ex, fr.ey)
    bx0, by0, bx1, by1 = bbox(lens0.outline(), 3.0, (0, 0, CROP_SIZE, CROP_SIZE))
    if bx1 <= bx0 or by1 <= by0 or weight <= 0.0:
        return
    h, w = by1 - by0, bx1 - bx0
    lens = MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
    u, v = lens.coords(w, h)
    fill = interior_fill(tiles, lens, u, v, fr.iod)
    alpha = (weight * feather(fill_poly(lens.outline(), h, w), 0.7))[..., None]
    roi = face[by0:by1, bx0:bx1].astype(np.float32)
    roi += alpha * (fill - roi)
    face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def tile_detail(tile: np.ndarray) -> float:
    """Laplacian std of a tile's grey image: the fine detail it carries."""
    g = cv2.cvtColor(np.clip(tile, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY).astype(np.float32)
    return float(cv2.Laplacian(g, cv2.CV_32F).std())


def lip_detail(image: np.ndarray, lm: np.ndarray) -> float:
    """Fine detail of a face's upper lip and the skin just above it, resampled to tile scale (open or closed
    mouths alike): the Laplacian std of that band's grey image."""
    ex, ey = _axes(lm)
    lens = MouthLens(lm, ex, ey)
    u = np.linspace(-U_SPAN, U_SPAN, GRID_W) * lens.half_width
    top = lens.upper(u)
    t = np.linspace(-0.6, 0.0, GRID_H // 2)
    v = top[None, :] + t[:, None] * lens.half_width
    uu = np.broadcast_to(u[None, :], v.shape)
    x = lens.c[0] + (uu + lens.u0) * ex[0] + v * ey[0]
    y = lens.c[1] + (uu + lens.u0) * ex[1] + v * ey[1]
    band = cv2.remap(image, x.astype(np.float32), y.astype(np.float32), cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return tile_detail(band)
