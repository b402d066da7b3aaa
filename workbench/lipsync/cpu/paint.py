"""The drawn inner mouth of the CPU renderer: where the avatar's own frames have no interior to reuse.

* `split_interior`: a source that shows its teeth but never opens (sun): the upper part of its own inner mouth
  moves with the upper lip, the lower part with the lower lip, a shaded cavity opens between;
* `inner_mouth`: a closed source: a shaded cavity, a tongue on open vowels and teeth, coloured from the lips and
  skin (`workbench.lipsync.cpu.interior` replaces it with real interiors where a library is available);
* `lip_seam`: lips pressed together over a source that showed them apart.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from workbench.config import CROP_SIZE, N_LANDMARKS
from workbench.lipsync.cpu.frontend import MouthState
from workbench.lipsync.cpu.geometry import FrameRig, MouthLens, bbox, feather, fill_poly

TEETH_SPLIT = 0.8  # share of the source's inner-lip gap that belongs to the upper teeth (a smile shows mostly those)
TEETH_REVEAL = 0.3  # the teeth rows grow by up to this share as the lips open beyond the source


def lip_seam(face: np.ndarray, lm: np.ndarray, fr: FrameRig, weight: float, lip_bgr: np.ndarray) -> None:
    lens = MouthLens(lm, fr.ex, fr.ey)
    bx0, by0, bx1, by1 = bbox(lens.outline(), 4.0, (0, 0, CROP_SIZE, CROP_SIZE))
    if bx1 <= bx0 or by1 <= by0:
        return
    h, w = by1 - by0, bx1 - bx0
    local = MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
    alpha = feather(fill_poly(local.seam(thickness=1.2 + 0.01 * fr.iod), h, w), 0.6)[..., None] * weight
    roi = face[by0:by1, bx0:bx1].astype(np.float32)
    seam = (0.5 * lip_bgr)[None, None, :]
    roi += alpha * (seam - roi)
    face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def palette(fr: FrameRig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cavity core, cavity rim, tongue and tooth colours (BGR) for this frame's lighting.

    A real open mouth is a dark red-brown cavity, a pink tongue dimmed by the lips' shadow, and teeth of
    a warm off-white a little below the lit skin. The lips' own colour carries the light's tint and level."""
    lip = fr.lip_bgr
    light = float(np.clip(np.dot(fr.skin_bgr, [0.114, 0.587, 0.299]) / 180.0, 0.35, 1.3))
    if fr.inner_dark is not None:
        # The source shows the inside of its mouth: its own shadows are the right colours for the depth.
        core, rim = 0.85 * fr.inner_dark[0], fr.inner_dark[1]
    else:
        core = 0.16 * lip + light * np.array([3.0, 3.0, 6.0])
        rim = 0.42 * lip
    tongue = 0.58 * lip + light * np.array([4.0, 8.0, 18.0])
    lum = float(np.dot(fr.skin_bgr, [0.114, 0.587, 0.299]))
    tooth = np.clip(1.08 * lum * np.array([0.86, 0.94, 1.0]), 0, 240)
    return core, rim, tongue, tooth


def cavity(lens: MouthLens, u: np.ndarray, v: np.ndarray, fr: FrameRig, state: MouthState) -> np.ndarray:
    """(h, w, 3) float BGR of the open mouth's inside: dark at its depth, lighter at the lips, a tongue low
    in it when the jaw is well down (less when the lips are rounded)."""
    core, rim, tongue_bgr, _ = palette(fr)
    up, lo = lens.upper(u), lens.lower(u)
    height = np.maximum(lo - up, 1e-3)
    t = np.clip((v - up) / height, 0.0, 1.0)
    side = np.clip(np.abs(u) / lens.half_width, 0.0, 1.0)
    depth = (np.sin(np.pi * t) ** 0.8) * np.sqrt(np.clip(1.0 - side**2, 0.0, 1.0))
    fill = rim[None, None, :] + depth[..., None] * (core - rim)[None, None, :]
    open_ = float(np.clip(state.open, 0.0, 1.0))
    reach = (0.22 + 0.18 * open_) * (1.0 - 0.6 * float(np.clip(state.round, 0.0, 1.0)))
    if open_ > 0.25 and reach > 0.05:
        # The tongue: a mound from the lower lip, highest in the middle, lit from the front.
        top = 1.0 - reach * (1.0 - 0.8 * side**2)
        soft = 0.12 + 1.5 / float(height.max())
        a_t = np.clip((t - top) / soft + 0.5, 0.0, 1.0) * np.clip(1.0 - side, 0.0, 1.0) ** 0.5
        lit = 0.8 + 0.3 * np.clip((t - top) / max(reach, 1e-3), 0.0, 1.0) ** 0.5
        fill += (0.9 * a_t)[..., None] * (tongue_bgr[None, None, :] * lit[..., None] - fill)
    return fill


def tooth_structure(u: np.ndarray, half_width: float) -> np.ndarray:
    """Brightness of a row of teeth across the mouth: each tooth rounded (lit in its middle), a dark line
    between neighbours; incisors widest, narrowing towards the corners."""
    un = np.abs(u) / max(half_width, 1.0)
    edges = np.array([0.0, 0.24, 0.44, 0.6, 0.74, 0.86, 1.2])
    k = np.clip(np.searchsorted(edges, un) - 1, 0, len(edges) - 2)
    lo, hi = edges[k], edges[k + 1]
    phase = (un - lo) / (hi - lo)
    rounded = 0.9 + 0.1 * np.sin(np.pi * phase)
    px = np.minimum(un - lo, hi - un) * half_width  # px to the nearest tooth boundary
    line = 1.0 - 0.2 * np.exp(-((px / 0.6) ** 2))
    return rounded * line


def inner_mouth(
    face: np.ndarray,
    lm: np.ndarray,
    fr: FrameRig,
    gap: float,
    weight: float,
    lip_bgr: np.ndarray,
    skin_bgr: np.ndarray,
    state: MouthState,
    teeth: bool = True,
) -> None:
    """Draw the inside of the mouth within the inner lips of `face`, in place, for a source that never opens:
    a shaded cavity, a tongue, and teeth with individual structure."""
    lens0 = MouthLens(lm, fr.ex, fr.ey)
    bx0, by0, bx1, by1 = bbox(lens0.outline(), 3.0 + 0.9 * gap, (0, 0, CROP_SIZE, CROP_SIZE))
    if bx1 <= bx0 or by1 <= by0 or weight <= 0.0:
        return
    h, w = by1 - by0, bx1 - bx0
    lens = MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
    roi = face[by0:by1, bx0:bx1].astype(np.float32)
    mask = fill_poly(lens.outline(), h, w)
    alpha = feather(mask, 0.7)
    u, v = lens.coords(w, h)
    fill = cavity(lens, u, v, fr, state)
    if teeth:
        _, _, _, tooth = palette(fr)
        side = np.clip(np.abs(u) / lens.half_width, 0, 1) ** 2
        structure = tooth_structure(u, lens.half_width)
        # Upper teeth hang from under the upper lip, about half the opening, at most ~0.09 D showing; the lip
        # shades their roots, their biting edges are a little translucent.
        upper_h = min(0.45 * gap, 0.09 * fr.iod)
        t_alpha = feather(fill_poly(lens.band(0.7, lower=False, height=upper_h), h, w), 0.45) * alpha
        dv = np.clip((v - lens.upper(u)) / max(upper_h, 1e-3), 0, 1)
        shade = (1.0 - 0.45 * side) * (0.72 + 0.28 * np.clip(2.5 * dv, 0, 1)) * (1.0 - 0.12 * dv**4) * structure
        fill = fill + (0.97 * t_alpha[..., None]) * (tooth[None, None, :] * shade[..., None] - fill)
        if gap > 0.14 * fr.iod:
            # Lower teeth: a dimmer, thinner row behind the lower lip of a wide-open mouth.
            lower_h = min(0.15 * gap, 0.035 * fr.iod)
            l_alpha = feather(fill_poly(lens.band(0.5, lower=True, height=lower_h), h, w), 0.45) * alpha
            l_shade = 0.6 * (1.0 - 0.5 * side) * structure
            fill = fill + (0.85 * l_alpha[..., None]) * (tooth[None, None, :] * l_shade[..., None] - fill)
    a = (weight * alpha)[..., None]
    roi += a * (fill - roi)
    face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)


def split_interior(
    face: np.ndarray,
    crop: np.ndarray,
    lm: np.ndarray,
    fr: FrameRig,
    state: MouthState,
    cavity_fill: Callable[[MouthLens, np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> None:
    """The inside of a source mouth that shows its teeth, opened wider, in place.

    The upper part of the source's opening (upper teeth) is carried with the upper lip, the lower part with
    the lower lip, each at its own size; the opening between them is the shaded cavity. The teeth are the
    person's own pixels, one resampling from the source crop."""
    lens_t0 = MouthLens(lm, fr.ex, fr.ey)
    bx0, by0, bx1, by1 = bbox(lens_t0.outline(), 3.0, (0, 0, CROP_SIZE, CROP_SIZE))
    if bx1 <= bx0 or by1 <= by0:
        return
    h, w = by1 - by0, bx1 - bx0
    lens_t = MouthLens(lm - [bx0, by0], fr.ex, fr.ey)
    lens_s = MouthLens(fr.pts[:N_LANDMARKS], fr.ex, fr.ey)
    u, v = lens_t.coords(w, h)
    us = u * (lens_s.half_width / lens_t.half_width)
    up_t, lo_t = lens_t.upper(u), lens_t.lower(u)
    up_s, lo_s = lens_s.upper(us), lens_s.lower(us)
    hs = np.maximum(lo_s - up_s, 0.0)
    # The teeth show a little more of themselves as the lips part (the lips, not the teeth, hide them).
    extra = float(np.clip((lens_t.height() - lens_s.height()) / max(lens_s.height(), 1.0), 0.0, 1.0))
    stretch = 1.0 + TEETH_REVEAL * extra
    split = TEETH_SPLIT * hs * stretch
    low = (1.0 - TEETH_SPLIT) * hs * stretch
    d_up, d_lo = v - up_t, lo_t - v
    a_up = np.clip((split - d_up) / 0.8 + 0.5, 0.0, 1.0)
    a_lo = np.clip((low - d_lo) / 0.8 + 0.5, 0.0, 1.0) * (1.0 - a_up)
    vs = np.where(d_up <= split, up_s + d_up / stretch, lo_s - d_lo / stretch)
    pts = lens_s.c[:, None, None] + (us + lens_s.u0)[None] * fr.ex[:, None, None] + vs[None] * fr.ey[:, None, None]
    teeth = cv2.remap(
        crop, pts[0].astype(np.float32), pts[1].astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    ).astype(np.float32)
    # Between the teeth: a real interior where the caller has one (`cavity_fill`), else the drawn cavity.
    fill = cavity(lens_t, u, v, fr, state) if cavity_fill is None else cavity_fill(lens_t, u, v)
    a_teeth = (a_up + a_lo)[..., None]
    fill += a_teeth * (teeth - fill)
    alpha = feather(fill_poly(lens_t.outline(), h, w), 0.7)[..., None]
    roi = face[by0:by1, bx0:bx1].astype(np.float32)
    roi += alpha * (fill - roi)
    face[by0:by1, bx0:bx1] = np.clip(roi + 0.5, 0, 255).astype(np.uint8)
