"""Comb or teeth: a structure score for the inside of an open mouth (issue 31).

The mouth colour scores (`mouth_quality`) cannot see the complaint issue 31 starts from: a drawn interior that is
"a bright, evenly spaced double row of teeth, comb-like at chat size" has neutral teeth, so it sits in a person's
colour gamut like real teeth (0.93-0.99, docs/cpu_renderer_mouth.md 5.4). This score looks at the *structure*:

1. the inside of the mouth is unwrapped between the inner lips (column u across the mouth from corner to corner,
   row t from the upper to the lower inner lip, as the library interior is, `workbench.lipsync.cpu.interior`);
2. the teeth band is the run of rows around the brightest one that are lit to within `BAND_LEVEL` of it above the
   mouth's dark (its 10th percentile); a mouth whose brightest row is not `BAND_CONTRAST` grey levels above its
   dark, or whose bright run is thinner than `MIN_BAND_ROWS`, shows no teeth and is skipped (a dark cavity);
3. the band's luminance profile along u, detrended (a wide Gaussian removes the shading from the middle to the
   corners) and divided by its mean brightness, has a dip at every separator between two teeth: the local minima
   `SEPARATOR_PROMINENCE` below the highest point within `SEPARATOR_REACH` columns on both sides;
4. a comb is many, evenly spaced, equally deep separators: score = density × evenness × equality, each in [0, 1]:
   density rises from 0 at `DENSITY_RANGE[0]` separators to 1 at `DENSITY_RANGE[1]`, evenness = 1 - CV of the
   spacing, equality = 1 - CV of the depths (CVs capped at 1). Real teeth seen through a talking mouth show a few
   broad incisors with separators of very different depth (shadow, overlap, the tongue): low on all three.

Per frame a number in [0, 1] (None: no teeth band); pooled as the mean over the open frames (openness >=
`mouth_quality.OPEN_MIN`) that show a teeth band. `COMB_THRESHOLD` and every constant above were chosen on design
data only (talk1, talk2: real open mouths and the drawn interior rendered on their closed frames); the held-out
result is in docs/cpu_renderer_mouth.md 5.9. It does not look at edge hardness: a blurred comb is still a comb.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from workbench.evaluation.mouth_quality import OPEN_MIN
from workbench.lipsync.cpu.bank import raw_openness
from workbench.lipsync.cpu.geometry import MouthLens

GRID_W, GRID_H = 96, 40  # unwrapped inner mouth: columns across, rows from the upper to the lower inner lip
U_SPAN = 0.85  # share of the half width either side that is unwrapped (the corners are lip and shadow)
T_SPAN = (0.06, 0.94)  # rows unwrapped between the inner lips: the fitted lip curves' edge rows are part lip or skin
MIN_BAND_ROWS = 3  # a bright run thinner than this (of GRID_H) is a lip's edge, not a row of teeth
BAND_CONTRAST = 25.0  # grey levels the brightest row must stand above the mouth's dark to count as teeth
BAND_LEVEL = 0.6  # band rows: lit to at least this share of the way from the dark to the brightest row
DETREND_SIGMA = 6.0  # columns: the Gaussian whose smoothing of the profile is taken as its shading
SEPARATOR_PROMINENCE = 0.02  # a separator's depth below its neighbours, as a share of the band's mean brightness
SEPARATOR_REACH = 8  # columns either side in which a separator's neighbours (the teeth beside it) are looked for
DENSITY_RANGE = (3, 9)  # separators: density 0 at or below the first, 1 from the second
COMB_THRESHOLD = 0.34  # pooled score from which a mouth reads as a comb (design: real <= 0.16, drawn >= 0.53; midway)


@dataclass(frozen=True)
class FrameStructure:
    """One frame's teeth structure: `score` None where no teeth band shows."""

    score: float | None
    separators: int = 0
    spacing_cv: float | None = None
    depth_cv: float | None = None
    band_rows: int = 0


def unwrap_grey(frame: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """(GRID_H, GRID_W) float grey image of the inside of the mouth of `frame` (68 landmarks `lm`), unwrapped
    between the inner lips."""
    v = lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)
    ex = v / max(float(np.hypot(*v)), 1e-6)
    ey = np.array([-ex[1], ex[0]])
    lens = MouthLens(lm, ex, ey)
    u = np.linspace(-U_SPAN, U_SPAN, GRID_W) * lens.half_width
    t = np.linspace(*T_SPAN, GRID_H)
    up, lo = lens.upper(u), lens.lower(u)
    vv = up[None, :] + t[:, None] * (lo - up)[None, :]
    uu = np.broadcast_to(u[None, :], vv.shape)
    x = lens.c[0] + (uu + lens.u0) * ex[0] + vv * ey[0]
    y = lens.c[1] + (uu + lens.u0) * ex[1] + vv * ey[1]
    # Sample first, then grey: the grid is small, the frame may be large (grey is linear, so the order is moot).
    out = cv2.remap(
        frame, x.astype(np.float32), y.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return (out if out.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)).astype(np.float64)


def teeth_band(grey: np.ndarray) -> tuple[int, int] | None:
    """(first, last) row of the teeth band of an unwrapped mouth, or None where no row is bright enough."""
    rows = grey.mean(axis=1)
    dark = float(np.percentile(grey, 10))
    k = int(np.argmax(rows))
    contrast = float(rows[k]) - dark
    if contrast < BAND_CONTRAST:
        return None
    lit = rows >= dark + BAND_LEVEL * contrast
    a = b = k
    while a > 0 and lit[a - 1]:
        a -= 1
    while b < len(rows) - 1 and lit[b + 1]:
        b += 1
    return (a, b) if b - a + 1 >= MIN_BAND_ROWS else None


def separators(profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(columns, depths) of the dark separators along a teeth band's luminance profile (see the module doc)."""
    p = np.asarray(profile, np.float64)
    shade = cv2.GaussianBlur(p[None], (0, 0), DETREND_SIGMA, borderType=cv2.BORDER_REFLECT)[0]
    hp = (p - shade) / max(float(p.mean()), 1.0)
    cols, depths = [], []
    for i in range(1, len(hp) - 1):
        if hp[i] < hp[i - 1] and hp[i] <= hp[i + 1]:
            depth = min(hp[max(0, i - SEPARATOR_REACH) : i].max(), hp[i + 1 : i + 1 + SEPARATOR_REACH].max()) - hp[i]
            if depth >= SEPARATOR_PROMINENCE:
                cols.append(i)
                depths.append(depth)
    return np.asarray(cols, np.float64), np.asarray(depths, np.float64)


def _cv(x: np.ndarray) -> float:
    return float(min(1.0, x.std() / max(float(x.mean()), 1e-9)))


def frame_structure(frame: np.ndarray, lm: np.ndarray) -> FrameStructure:
    """The comb score of one frame's open mouth (`lm`: 68 landmarks in `frame`'s pixels)."""
    grey = unwrap_grey(frame, np.asarray(lm, np.float64))
    band = teeth_band(grey)
    if band is None:
        return FrameStructure(score=None)
    a, b = band
    cols, depths = separators(grey[a : b + 1].mean(axis=0))
    n = len(cols)
    if n < 3:  # two separators have one spacing: nothing to be regular about, and no comb has so few
        return FrameStructure(score=0.0, separators=n, band_rows=b - a + 1)
    lo, hi = DENSITY_RANGE
    density = float(np.clip((n - lo) / (hi - lo), 0.0, 1.0))
    sp_cv, dep_cv = _cv(np.diff(cols)), _cv(depths)
    score = density * (1.0 - sp_cv) * (1.0 - dep_cv)
    return FrameStructure(score=score, separators=n, spacing_cv=sp_cv, depth_cv=dep_cv, band_rows=b - a + 1)


def comb_score(frames: Iterable[np.ndarray], landmarks: Iterable[np.ndarray]) -> dict:
    """Pooled comb score over the open frames: {"score" (nan where no frame shows teeth), "open_frames",
    "measured_frames", "skipped_no_teeth", "comb_frames" (frames scoring >= COMB_THRESHOLD), "is_comb"}."""
    scores, n_open = [], 0
    for f, lm in zip(frames, landmarks, strict=True):
        lm = np.asarray(lm, np.float64)
        if not np.isfinite(lm).all() or raw_openness(lm[None])[0] < OPEN_MIN:
            continue
        n_open += 1
        s = frame_structure(f, lm).score
        if s is not None:
            scores.append(s)
    mean = float(np.mean(scores)) if scores else float("nan")
    return {
        "score": mean,
        "open_frames": n_open,
        "measured_frames": len(scores),
        "skipped_no_teeth": n_open - len(scores),
        "comb_frames": int(np.sum(np.asarray(scores) >= COMB_THRESHOLD)),
        "is_comb": bool(scores) and mean >= COMB_THRESHOLD,
    }
