"""Measures of how real a rendered mouth looks next to the source video's own frames.

Both take 68-point landmarks re-detected on the frames being judged (an independent detector, not the
renderer's own target shape), so a mouth drawn in the wrong place is judged where it really is.

* inner-mouth colour share: a palette of the colours that are common inside the source's own open mouths
  (the quantised colours that together hold `PALETTE_MASS` of the pixels inside the inner lips, points
  60–67, of the source frames given), and for any set of frames the share of their inner-lip pixels whose
  colour is in that palette. A flat maroon cavity or a grey band of "teeth" scores low on a real person;
  the person's own mouth scores about `PALETTE_MASS` (on frames the palette was not built from);
* for a face that never opens (a painting, a photo) there are no inner-mouth pixels to build the palette from;
  `build_face_palette` takes the lips and skin of the lower face instead (jaw line up to the nose), the person's
  gamut in the sense of issue 31's target;
* mouth sharpness: the variance of the Laplacian of the grey image over the mouth's box (outer lips grown
  by a quarter of the interocular distance), averaged over frames. A mouth pasted from a 256x256 crop into
  a larger face box, or smeared by warping, loses it.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from workbench.lipsync.cpu.bank import raw_openness

LEVELS = 12  # colour quantisation per BGR channel (256 / 12 ≈ 21 grey levels a bin)
PALETTE_MASS = 0.9  # the palette: the most frequent bins holding this share of the source's inner-mouth pixels
OPEN_MIN = 0.25  # frames count as open from this openness (GAP_MAX units: inner-lip gap over 0.26 iod)
MIN_PIXELS = 12  # an inner-lip polygon smaller than this many pixels is not measured
MOUTH_BOX_GROW = 0.25  # interocular distances around the outer lips for the sharpness box


def _iod(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)))


def inner_pixels(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(n, 3) BGR pixels inside the inner lips (points 60–67) of one frame."""
    m = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(lm[60:68]).astype(np.int32)], 1)
    return frame[m.astype(bool)]


def _bins(pixels: np.ndarray) -> np.ndarray:
    q = (pixels.astype(np.int32) * LEVELS) // 256
    return (q[:, 0] * LEVELS + q[:, 1]) * LEVELS + q[:, 2]


def open_frames(landmarks: Iterable[np.ndarray]) -> np.ndarray:
    lms = np.asarray(list(landmarks), np.float64)
    return raw_openness(lms) >= OPEN_MIN if len(lms) else np.zeros(0, bool)


def build_palette(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray]) -> np.ndarray:
    """(LEVELS**3,) bool: the colour bins common inside the open mouths of these (source) frames."""
    counts = np.zeros(LEVELS**3, np.int64)
    for f, lm in zip(frames, landmarks, strict=True):
        lm = np.asarray(lm, np.float64)
        if raw_openness(lm[None])[0] < OPEN_MIN:
            continue
        px = inner_pixels(f, lm)
        if len(px) >= MIN_PIXELS:
            counts += np.bincount(_bins(px), minlength=LEVELS**3)
    if counts.sum() == 0:
        raise ValueError("no open mouth in the source frames: nothing to build an inner-mouth palette from")
    order = np.argsort(counts)[::-1]
    cum = np.cumsum(counts[order]) / counts.sum()
    keep = order[: int(np.searchsorted(cum, PALETTE_MASS)) + 1]
    palette = np.zeros(LEVELS**3, bool)
    palette[keep] = True
    return palette


def lower_face_pixels(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(n, 3) BGR pixels of the lower face: inside the jaw line (points 3–13) closed by the nose base (35–31),
    lips included."""
    poly = np.concatenate([lm[3:14], lm[35:30:-1]])
    m = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1)
    return frame[m.astype(bool)]


def build_face_palette(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray]) -> np.ndarray:
    """(LEVELS**3,) bool: the colour bins holding `PALETTE_MASS` of the lower face's pixels (lips and skin)."""
    counts = np.zeros(LEVELS**3, np.int64)
    for f, lm in zip(frames, landmarks, strict=True):
        px = lower_face_pixels(f, np.asarray(lm, np.float64))
        if len(px):
            counts += np.bincount(_bins(px), minlength=LEVELS**3)
    if counts.sum() == 0:
        raise ValueError("no lower-face pixels in the source frames: nothing to build a palette from")
    order = np.argsort(counts)[::-1]
    cum = np.cumsum(counts[order]) / counts.sum()
    palette = np.zeros(LEVELS**3, bool)
    palette[order[: int(np.searchsorted(cum, PALETTE_MASS)) + 1]] = True
    return palette


def _pooled_share(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], inside) -> dict:
    """Share of inner-lip pixels of the open frames for which `inside(pixels) -> bool array` holds, pooled."""
    hit = total = n_open = 0
    for f, lm in zip(frames, landmarks, strict=True):
        lm = np.asarray(lm, np.float64)
        if raw_openness(lm[None])[0] < OPEN_MIN:
            continue
        px = inner_pixels(f, lm)
        if len(px) < MIN_PIXELS:
            continue
        n_open += 1
        hit += int(inside(px).sum())
        total += len(px)
    return {"share": hit / total if total else float("nan"), "open_frames": n_open, "pixels": total}


def colour_share(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], palette: np.ndarray) -> dict:
    """Share of inner-lip pixels of the open frames whose colour is in `palette` (pooled over pixels)."""
    return _pooled_share(frames, landmarks, lambda px: palette[_bins(px)])


def mouth_sharpness(frame: np.ndarray, lm: np.ndarray) -> float:
    """Laplacian variance of the grey mouth box of one frame."""
    lm = np.asarray(lm, np.float64)
    g = MOUTH_BOX_GROW * _iod(lm)
    x0, y0 = np.floor(lm[48:60].min(axis=0) - g).astype(int)
    x1, y1 = np.ceil(lm[48:60].max(axis=0) + g).astype(int)
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return float("nan")
    grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def mean_sharpness(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray]) -> float:
    vals = [mouth_sharpness(f, lm) for f, lm in zip(frames, landmarks, strict=True)]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


# --- the person's gamut for a face that never opens (issue 31) --------------------------------------------------
# The lips-and-skin palette above (12-level BGR bins) is lightness-bound: a real person's own open mouth scores only
# 0.22-0.53 against their own closed frames in it (its shadows are darker than any lip or skin pixel, their teeth
# lighter), so it cannot tell a real interior from a painted one. The person's gamut is instead taken in rg
# chromaticity (r = R / (R+G+B), g = G / (R+G+B): a shadow and a highlight of one surface share it), as the bins
# that hold GAMUT_MASS of the closed lower face's lips and skin, grown by GAMUT_GROW bins, plus what every mouth
# interior has under any light: near-neutral colours (teeth, grey shadow; within NEUTRAL_RADIUS of the grey point or
# of the line from it to the face's own skin chromaticity, the light's cast) and pixels too dark for chromaticity to
# mean anything (R+G+B below DARK_SUM). Chosen on the design clips talk1 and talk2 only (docs/cpu_renderer_mouth.md).
RG_BIN = 0.01  # chromaticity bin width
GAMUT_MASS = 0.95  # share of the closed lower face's pixels whose bins make the gamut
GAMUT_GROW = 1  # bins the gamut grows by (compression and the warm light inside a mouth)
NEUTRAL_RADIUS = 0.025  # rg distance from the neutral-to-skin line that counts as neutral
DARK_SUM = 90  # R+G+B below this: too dark for its chromaticity to be measured (8-bit noise dominates)
_RG_N = int(round(1.0 / RG_BIN)) + 1


def _rg(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, g, R+G+B) of (n, 3) BGR pixels."""
    px = pixels.astype(np.float64)
    s = px.sum(axis=1)
    d = np.maximum(s, 1.0)
    return px[:, 2] / d, px[:, 1] / d, s


def build_person_gamut(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray]) -> dict:
    """The person's gamut from (closed-mouth) source frames: rg-chromaticity bins of the lower face's lips and skin
    (`GAMUT_MASS`, grown by `GAMUT_GROW`), and the face's skin chromaticity (the neutral line's far end)."""
    counts = np.zeros((_RG_N, _RG_N), np.int64)
    rs, gs = [], []
    for f, lm in zip(frames, landmarks, strict=True):
        px = lower_face_pixels(f, np.asarray(lm, np.float64))
        r, g, s = _rg(px)
        ok = s >= DARK_SUM
        ri, gi = np.round(r[ok] / RG_BIN).astype(int), np.round(g[ok] / RG_BIN).astype(int)
        np.add.at(counts, (ri, gi), 1)
        rs.append(np.median(r[ok]) if ok.any() else np.nan)
        gs.append(np.median(g[ok]) if ok.any() else np.nan)
    if counts.sum() == 0:
        raise ValueError("no lower-face pixels in the source frames: nothing to build a gamut from")
    flat = counts.ravel()
    order = np.argsort(flat)[::-1]
    cum = np.cumsum(flat[order]) / flat.sum()
    keep = np.zeros(flat.shape, np.uint8)
    keep[order[: int(np.searchsorted(cum, GAMUT_MASS)) + 1]] = 1
    keep = keep.reshape(counts.shape)
    if GAMUT_GROW:
        keep = cv2.dilate(keep, np.ones((2 * GAMUT_GROW + 1,) * 2, np.uint8))
    return {"bins": keep.astype(bool), "skin_rg": np.array([np.nanmedian(rs), np.nanmedian(gs)])}


def in_person_gamut(pixels: np.ndarray, gamut: dict) -> np.ndarray:
    """(n,) bool: which (n, 3) BGR pixels are in `gamut` (`build_person_gamut`)."""
    r, g, s = _rg(pixels)
    ri = np.clip(np.round(r / RG_BIN).astype(int), 0, _RG_N - 1)
    gi = np.clip(np.round(g / RG_BIN).astype(int), 0, _RG_N - 1)
    in_bins = gamut["bins"][ri, gi]
    # Distance to the segment from the neutral point to the skin's chromaticity.
    a, b = np.array([1.0 / 3.0, 1.0 / 3.0]), np.asarray(gamut["skin_rg"], np.float64)
    p = np.stack([r, g], axis=1)
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(p - (a + t[:, None] * ab), axis=1)
    return in_bins | (dist <= NEUTRAL_RADIUS) | (s < DARK_SUM)


def person_gamut_share(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray], gamut: dict) -> dict:
    """Share of inner-lip pixels of the open frames in the person's gamut (`build_person_gamut`), pooled."""
    return _pooled_share(frames, landmarks, lambda px: in_person_gamut(px, gamut))
