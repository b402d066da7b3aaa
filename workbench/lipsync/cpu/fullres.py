"""The warped-and-drawn mouth at the frame's own resolution: one resampling of the source, not three.

The CPU renderer warps the lower face inside the avatar's 256x256 crop, and the compositor scales the change
back into the face box. On a still mouth (a painting, a photo) that is the frame resampled three times: down
into the crop (Lanczos), by the piecewise-affine warp (bicubic), and back up (bilinear); each interpolation at
a sub-pixel offset is a low-pass filter, so a painting's fine lip outlines came back soft (mouth-box sharpness
0.78 of the source on yongen). Here the same triangle warp is composed with the crop's scaling and applied
once to the full-resolution frame, over the mouth region (the lips grown as for the bank's paste, feathered: the
resampling costs per pixel, and on the jaw and chin the crop's softness does not show); only the pixels the renderer
painted itself (the inner mouth, the lip seam), which have no source pixels to come from, keep the crop's pass.
"""

from __future__ import annotations

import cv2
import numpy as np

PAINTED_GROW = 1  # crop pixels the painted mask grows by before it is feathered (covers the drawing's own feather)
PAINTED_SIGMA = 0.8  # crop pixels: the hand-over between the drawn interior and the full-resolution lips


def crop_to_frame(pts: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Crop-pixel points into frame pixels of face box `box`, on the pixel grid `Compositor.paste_change` uses
    (frame pixel X of the box samples the crop at (X + 0.5) * size / w - 0.5)."""
    x1, y1, x2, y2 = box
    s = np.array([(x2 - x1) / size, (y2 - y1) / size])
    return (pts + 0.5) * s - 0.5 + [x1, y1]


def painted_mask(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """float32 (h, w) in [0, 1]: where the renderer drew over the warped crop (grown and feathered)."""
    d = cv2.absdiff(after, before)
    # Channel-wise OR of uint8 planes: numpy's max over a 3-long last axis costs ~10x this on a 256-wide crop.
    m = ((d[..., 0] | d[..., 1] | d[..., 2]) > 0).astype(np.uint8)
    if not m.any():
        return np.zeros(m.shape, np.float32)
    m = cv2.dilate(m, np.ones((2 * PAINTED_GROW + 1,) * 2, np.uint8))
    return cv2.GaussianBlur(m.astype(np.float32), (0, 0), PAINTED_SIGMA)


def rewarp(
    frame: np.ndarray,
    source: np.ndarray,
    box: tuple[int, int, int, int],
    size: int,
    crop_box: tuple[int, int, int, int],
    tris: np.ndarray,
    affines_fn,
    dst: np.ndarray,
    src: np.ndarray,
    alpha: np.ndarray,
    painted: np.ndarray | None,
    interp: int,
    region: np.ndarray | None = None,
    sigma: float = 0.0,
) -> None:
    """Redo the lower-face warp of composited `frame` (in place) from the full-resolution `source` frame.

    `dst`, `src`: the crop-pixel vertices the crop was warped between, `tris` the moving triangles, `crop_box`
    the crop box the warp touched; `alpha` the compositor's (h, w, 1) mask of the face box; `painted`: the crop
    region's painted mask (`painted_mask`, crop_box-sized) or None. `affines_fn(dst, src, tris)` -> (M, 2, 3).
    `region`: a crop-pixel polygon (the mouth) that limits the pass, feathered over `sigma` crop pixels: the full-
    resolution resampling costs per pixel, and away from the lips the crop's softness does not show."""
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    if bw <= 0 or bh <= 0:
        return
    cx0, cy0, cx1, cy1 = crop_box
    dst_f = crop_to_frame(dst, box, size)
    src_f = crop_to_frame(src, box, size)
    # The frame pixels the crop box covers (one more for the interpolation), inside the face box and the frame.
    lo = crop_to_frame(np.array([[cx0 - 1.0, cy0 - 1.0]]), box, size)[0]
    hi = crop_to_frame(np.array([[cx1 + 1.0, cy1 + 1.0]]), box, size)[0]
    fx0, fy0 = max(x1, 0, int(np.floor(lo[0]))), max(y1, 0, int(np.floor(lo[1])))
    fx1 = min(x2, frame.shape[1], int(np.ceil(hi[0])) + 1)
    fy1 = min(y2, frame.shape[0], int(np.ceil(hi[1])) + 1)
    weight = None
    if region is not None:
        poly = crop_to_frame(region, box, size)
        s_f = sigma * (bw + bh) / (2.0 * size)
        gx0, gy0 = np.floor(poly.min(axis=0) - 3.0 * s_f - 2.0).astype(int)
        gx1, gy1 = np.ceil(poly.max(axis=0) + 3.0 * s_f + 2.0).astype(int)
        fx0, fy0, fx1, fy1 = max(fx0, gx0), max(fy0, gy0), min(fx1, gx1), min(fy1, gy1)
        if fx1 <= fx0 or fy1 <= fy0:
            return
        m = np.zeros((fy1 - fy0, fx1 - fx0), np.uint8)
        cv2.fillPoly(m, [np.round(poly - [fx0, fy0]).astype(np.int32)], 255)
        weight = m.astype(np.float32) / 255.0
        if s_f > 0.3:
            weight = cv2.GaussianBlur(weight, (0, 0), s_f)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    h, w = fy1 - fy0, fx1 - fx0
    label = np.full((h, w), -1, np.int32)
    shift = 4
    fixed = np.round((dst_f[tris] - [fx0, fy0]) * (1 << shift)).astype(np.int32)
    for t in range(len(tris)):
        cv2.fillConvexPoly(label, fixed[t], (t,), lineType=cv2.LINE_8, shift=shift)
    aff = affines_fn(dst_f, src_f, tris).reshape(-1, 6)
    coef = np.concatenate([aff, [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]]]).T.astype(np.float32)
    c = coef[:, label]
    gx = np.arange(fx0, fx1, dtype=np.float32)[None, :]  # broadcast, not a full grid: this runs every frame
    gy = np.arange(fy0, fy1, dtype=np.float32)[:, None]
    mx = c[0] * gx + c[1] * gy + c[2]
    my = c[3] * gx + c[4] * gy + c[5]
    warped = cv2.remap(source, mx, my, interp, borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
    orig = source[fy0:fy1, fx0:fx1].astype(np.float32)
    a = alpha[fy0 - y1 : fy1 - y1, fx0 - x1 : fx1 - x1]
    full = orig + a * (warped - orig)  # what the compositor would have made of a full-resolution warp
    keep = np.ones((h, w, 1), np.float32)
    if painted is not None and painted.any():
        # The painted mask on this frame region: crop pixel (q) <- frame pixel by the inverse of crop_to_frame.
        sx, sy = size / bw, size / bh
        m = np.array(
            [[sx, 0.0, (fx0 - x1 + 0.5) * sx - 0.5 - cx0], [0.0, sy, (fy0 - y1 + 0.5) * sy - 0.5 - cy0]], np.float64
        )
        p = cv2.warpAffine(
            painted, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT
        )
        keep = (1.0 - np.clip(p, 0.0, 1.0))[..., None]
    if weight is not None:
        keep = keep * weight[..., None]
    region = frame[fy0:fy1, fx0:fx1]
    cur = region.astype(np.float32)
    region[...] = np.clip(cur + keep * (full - cur) + 0.5, 0, 255).astype(np.uint8)
