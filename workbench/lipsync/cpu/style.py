"""A painted avatar's inner mouth in its own style: the real interior re-coloured from the painting's palette.

The library interior (`interior`) is real footage: photographic teeth and a grey-blue cavity in a painting
looked pasted in. For a painted source the same interior is re-rendered in the painting's own colours, its
shapes kept (where the footage has teeth, the painting gets teeth):

* teeth: the whites of the avatar's own eyes (the brightest, least saturated pixels inside points 36–47);
* the cavity: the darkest shadows of its own lips and brows;
* tongue and gums: its own lip red, darkened as the footage's lightness says;

and flattened into a few tones with hard edges (a painting's flat fills and drawn edges, not sensor grain).

Which avatars are painted is measured (`painted_score`): a painting has flat skin and crisp drawn outlines, so
the median skin gradient is small against the face's strongest edges, and those edges are sharp (their
Laplacian is large for their gradient). The score is the edge sharpness over the skin flatness; the threshold
(`PAINTED_THRESHOLD`) was set on design clips only (docs/cpu_renderer_mouth.md); `interior_style` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Measured on the design clips (100 frames, 256x256 crops): photographs talk1 1.47, talk2 1.89; the painting
# yongen 4.05; talk1 and talk2 put through cv2.stylization (synthetic paintings) 10.9 and 13.5. A photo that gets a
# painted mouth is worse than a painting that keeps a real one, so the threshold sits just under the lowest
# painting (0.9 x 4.05), not half-way.
PAINTED_THRESHOLD = 3.6
SCORE_FRAMES = 10  # frames the score is the median over
TONES = 4  # lightness tones each painted region is flattened to
TEETH_MAX, TONGUE_MAX = 0.2, 0.35  # the deepest the teeth band and the tongue reach, shares of the opening


def _skin_mask(lm: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The cheeks: between the lower eyelids, the jaw, the nose and the mouth corners (eroded off the edges)."""
    m = np.zeros(shape, np.uint8)
    for poly in (lm[[1, 2, 3, 48, 31, 39, 40, 41]], lm[[15, 14, 13, 54, 35, 42, 47, 46]]):
        cv2.fillConvexPoly(m, np.round(poly).astype(np.int32), 1)
    return cv2.erode(m, np.ones((7, 7), np.uint8)) > 0


def painted_score(image: np.ndarray, lm: np.ndarray) -> float:
    """How painted one face looks (`image` BGR uint8, 68 landmarks `lm` in its pixels, best a 256x256 crop):
    the sharpness of its strongest edges (mean |Laplacian| / gradient on the top 2 % of the face's gradients)
    over the flatness of its skin (median cheek gradient / the face's 99th-percentile gradient)."""
    lm = np.asarray(lm, np.float64)
    g = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    grad = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    face = np.zeros(g.shape, np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.round(lm).astype(np.int32)), 1)
    face = face > 0
    skin = _skin_mask(lm, g.shape)
    if face.sum() < 100 or skin.sum() < 20:
        return float("nan")
    fg = grad[face]
    p99 = float(np.percentile(fg, 99))
    strong = face & (grad >= np.percentile(fg, 98))
    lap = np.abs(cv2.Laplacian(g, cv2.CV_32F))
    edge = float(lap[strong].mean() / max(grad[strong].mean(), 1e-6))
    flat = float(np.median(grad[skin]) / max(p99, 1e-6))
    return edge / max(flat, 1e-4)


def is_painted(crops: np.ndarray, crop_lms: np.ndarray, threshold: float = PAINTED_THRESHOLD) -> tuple[bool, float]:
    """(painted?, score): the median `painted_score` over up to `SCORE_FRAMES` evenly spread frames."""
    idx = np.unique(np.linspace(0, len(crops) - 1, min(SCORE_FRAMES, len(crops))).round().astype(int))
    scores = [painted_score(crops[i], crop_lms[i]) for i in idx]
    scores = [s for s in scores if np.isfinite(s)]
    score = float(np.median(scores)) if scores else 0.0
    return score >= threshold, score


@dataclass(frozen=True)
class PaintedPalette:
    """The avatar's own colours (BGR float) the interior is painted with."""

    teeth: np.ndarray  # the whites of its eyes
    cavity: np.ndarray  # its darkest lip and brow shadows
    tongue: np.ndarray  # its lip red


def _mean_of(px: np.ndarray, order_key: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    if len(px) < 5:
        return None
    o = np.argsort(order_key)
    a, b = int(lo * len(px)), max(int(hi * len(px)), int(lo * len(px)) + 1)
    return px[o[a:b]].astype(np.float64).mean(axis=0)


def avatar_palette(image: np.ndarray, lm: np.ndarray) -> PaintedPalette:
    """Teeth, cavity and tongue colours taken from the avatar's own eyes, lips and brows (one frame)."""
    lm = np.asarray(lm, np.float64)
    h, w = image.shape[:2]

    def pixels(polys: list[np.ndarray], grow: int = 0) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        for p in polys:
            cv2.fillPoly(m, [np.round(p).astype(np.int32)], 1)
        if grow:
            m = cv2.dilate(m, np.ones((2 * grow + 1,) * 2, np.uint8))
        return image[m > 0]

    lum = np.array([0.114, 0.587, 0.299])
    eyes = pixels([lm[36:42], lm[42:48]])
    hsv_sat = (eyes.max(axis=1).astype(np.float64) - eyes.min(axis=1)) / np.maximum(eyes.max(axis=1), 1)
    # The sclera: bright and unsaturated (iris and lashes are dark or coloured).
    teeth = _mean_of(eyes, -(eyes @ lum) + 80.0 * hsv_sat, 0.0, 0.2)
    lips = pixels([lm[48:60]])
    lips_only = lips if len(lips) else np.zeros((0, 3))
    brows = pixels([lm[17:22], lm[22:27]], grow=2)
    dark_src = np.concatenate([lips_only, brows]) if len(brows) else lips_only
    cavity = _mean_of(dark_src, dark_src @ lum, 0.0, 0.05) if len(dark_src) else None
    tongue = _mean_of(lips_only, lips_only @ lum, 0.3, 0.7) if len(lips_only) else None
    teeth = np.array([225.0, 232.0, 238.0]) if teeth is None else teeth
    tongue = np.array([110.0, 110.0, 190.0]) if tongue is None else tongue
    cavity = 0.35 * tongue if cavity is None else cavity
    # The interior sits in the lips' shadow: the teeth a little below the eye whites, the cavity at most as light
    # as a quarter of the lip red.
    # A line-art painting's darkest stroke is near black: the cavity is half that, half a deep shade of its lip red.
    cavity = 0.3 * np.minimum(cavity, 0.45 * tongue) + 0.7 * 0.5 * tongue
    # Eye whites are often painted with a cool tint: teeth keep their lightness with a quarter of the tint, warmed
    # a little (teeth are ivory, not blue).
    grey = float(teeth @ lum)
    teeth = 0.25 * teeth + 0.75 * grey * np.array([0.95, 1.0, 1.04])
    return PaintedPalette(teeth=teeth, cavity=cavity, tongue=tongue)


def reaches(tile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w,) each: how far a real interior tile's (unwrapped, row 0 at the upper lip; float BGR 0..255) bright,
    unsaturated upper teeth reach down from the upper lip and its redder lit pixels up from the lower lip, in shares
    of the opening, per column, smoothed across the mouth."""
    h = tile.shape[0]
    lab = cv2.cvtColor(np.clip(tile, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lab = cv2.GaussianBlur(lab, (0, 0), 1.0)  # shapes, not grain
    L, a = lab[..., 0], lab[..., 1]
    lo, hi = np.percentile(L, 5), np.percentile(L, 98)
    ln = np.clip((L - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    teeth_px = (ln > 0.5) & (a < 16.0)
    # The tongue: the redder half of the lit, non-tooth pixels (footage tongues are only a little redder than the
    # shadow around them, so relative to this tile, not an absolute hue).
    tongue_px = (a > np.percentile(a, 50)) & (ln > 0.25) & ~teeth_px
    rows = np.arange(h)[:, None]
    top, bottom = rows < 0.6 * h, rows >= 0.4 * h
    reach_t = cv2.GaussianBlur((teeth_px & top).sum(axis=0).astype(np.float32)[None, :], (0, 0), 6.0)[0] / h
    reach_g = cv2.GaussianBlur((tongue_px & bottom).sum(axis=0).astype(np.float32)[None, :], (0, 0), 6.0)[0] / h
    return reach_t, reach_g


def paint_tile(tile: np.ndarray, pal: PaintedPalette, shape: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(h, w, 3) float BGR: a real interior tile (unwrapped, row 0 at the upper lip; float BGR 0..255) re-painted
    in `pal`'s colours.

    The footage says where the teeth and the tongue are (`reaches`; `shape` gives them instead, e.g. the median
    over an avatar's entries, so the painted shapes stay put as the opening changes). They become flat shapes with
    clean edges, as a painter draws them: a band of teeth, a tongue mound and the cavity between, each in `TONES`
    tones of its own colour (a little shadow under the upper lip and in the depth of the mouth)."""
    h, w = tile.shape[:2]
    reach_t, reach_g = reaches(tile) if shape is None else shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    # A painter's upper teeth are a narrow band under the lip; a deeper band also hid the opening from a face
    # detector's lip fit (the band read as lip).
    teeth = rows < (np.minimum(reach_t, TEETH_MAX) * h)[None, :]
    tongue = (rows >= h - (np.minimum(reach_g, TONGUE_MAX) * h)[None, :]) & ~teeth
    # Depth: 0 at the lips, 1 in the middle of the opening and across it (the corners are shallower).
    col = np.abs(np.linspace(-1.0, 1.0, w, dtype=np.float32))[None, :]
    depth = np.sin(np.pi * (rows + 0.5) / h) * np.sqrt(np.clip(1.0 - col**2, 0.0, 1.0))
    tone = np.floor(np.clip(depth, 0.0, 0.999) * TONES) / (TONES - 1)  # 0 light .. 1 dark, flat steps
    lip_shade = np.floor(np.clip(1.0 - rows / max(0.25 * h, 1.0), 0.0, 0.999) * 2) / 2  # under the upper lip
    out = np.empty((h, w, 3), np.float32)
    cav = np.asarray(pal.cavity, np.float32)
    out[:] = cav * (1.15 - 0.4 * tone)[..., None]
    tg = np.asarray(pal.tongue, np.float32) * (1.0 - 0.12 * tone)[..., None]
    out = np.where(tongue[..., None], tg, out)
    tt = np.asarray(pal.teeth, np.float32) * (1.0 - 0.18 * lip_shade)[..., None]
    out = np.where(teeth[..., None], tt, out)
    return np.clip(out, 0, 255)
