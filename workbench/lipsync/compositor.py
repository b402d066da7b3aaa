"""Paste a generated 256x256 face back into the full frame through the avatar's blending mask.

Both renderers end here, so a `bbox_shift` or mask parameter means the same thing in each.
Only pixels inside the face box can change; everything else is the avatar frame, byte for byte.
"""

from __future__ import annotations

import cv2
import numpy as np

from workbench.avatars.model import Avatar


class Compositor:
    """Per-avatar paste-back with the box-sized masks computed once and reused.

    `alpha_cache` lets a caller keep those masks across Compositor objects without keeping the avatar alive.
    """

    def __init__(self, avatar: Avatar, alpha_cache: dict[int, np.ndarray] | None = None):
        self.avatar = avatar
        self._alpha: dict[int, np.ndarray] = {} if alpha_cache is None else alpha_cache

    def alpha(self, i: int) -> np.ndarray:
        """The mask of frame i resized to its face box, float32 in [0, 1], shape (h, w, 1)."""
        a = self._alpha.get(i)
        if a is None:
            x1, y1, x2, y2 = (int(v) for v in self.avatar.boxes[i])
            m = cv2.resize(self.avatar.masks[i], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            a = (m.astype(np.float32) / 255.0)[..., None]
            self._alpha[i] = a
        return a

    def paste(self, i: int, face: np.ndarray, frame: np.ndarray | None = None) -> np.ndarray:
        """A copy of avatar frame i (or of `frame`) with `face` (256x256x3 uint8 BGR) blended in."""
        out = (self.avatar.frames[i] if frame is None else frame).copy()
        x1, y1, x2, y2 = (int(v) for v in self.avatar.boxes[i])
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            return out
        region = out[y1:y2, x1:x2]
        resized = cv2.resize(face, (w, h), interpolation=cv2.INTER_LINEAR)
        a = self.alpha(i)
        blended = region.astype(np.float32) + a * (resized.astype(np.float32) - region.astype(np.float32))
        # Where the mask is exactly 0 the rounding below gives back the original byte.
        region[...] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        return out

    def paste_change(
        self, i: int, face: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """A copy of avatar frame i with only the change `face - reference` (both 256x256 crops) blended in.

        A renderer that edits the avatar's own crop (the CPU renderer) uses this: where it left the crop alone
        the frame keeps its full-resolution pixels instead of the crop's resampled copy. `box` (x0, y0, x1, y1,
        crop pixels) bounds the edit; the change is resampled onto exactly the frame pixels that box covers,
        on the same pixel grid `paste` uses, through the same mask."""
        out = self.avatar.frames[i].copy()
        x1, y1, x2, y2 = (int(v) for v in self.avatar.boxes[i])
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            return out
        size = face.shape[0]
        cx0, cy0, cx1, cy1 = box if box is not None else (0, 0, size, size)
        if cx1 <= cx0 or cy1 <= cy0:
            return out
        sx, sy = size / w, size / h
        # Frame pixels whose centres fall inside the edited crop box, widened by one for the interpolation.
        fx0 = max(0, int(np.floor((cx0 - 1) / sx)))
        fy0 = max(0, int(np.floor((cy0 - 1) / sy)))
        fx1 = min(w, int(np.ceil((cx1 + 1) / sx)))
        fy1 = min(h, int(np.ceil((cy1 + 1) / sy)))
        if fx1 <= fx0 or fy1 <= fy0:
            return out
        # The change only where the sampled frame pixels can read it (their crop positions, one pixel either side
        # for the bilinear taps), so the conversion touches the edited box, not the whole crop.
        gx0, gy0 = max(0, int(np.floor((fx0 + 0.5) * sx - 0.5)) - 1), max(0, int(np.floor((fy0 + 0.5) * sy - 0.5)) - 1)
        gx1, gy1 = (
            min(size, int(np.ceil((fx1 + 0.5) * sx - 0.5)) + 2),
            min(size, int(np.ceil((fy1 + 0.5) * sy - 0.5)) + 2),
        )
        delta = face[gy0:gy1, gx0:gx1].astype(np.float32) - reference[gy0:gy1, gx0:gx1].astype(np.float32)
        # Frame pixel X (box-local) samples the crop at (X + 0.5) * s - 0.5, as cv2.resize does.
        m = np.array([[sx, 0.0, (fx0 + 0.5) * sx - 0.5 - gx0], [0.0, sy, (fy0 + 0.5) * sy - 0.5 - gy0]])
        d = cv2.warpAffine(
            delta,
            m,
            (fx1 - fx0, fy1 - fy0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        a = self.alpha(i)[fy0:fy1, fx0:fx1]
        region = out[y1 + fy0 : y1 + fy1, x1 + fx0 : x1 + fx1]
        blended = region.astype(np.float32)
        blended += a * d
        blended += 0.5
        region[...] = np.clip(blended, 0, 255, out=blended)  # the assignment truncates, as astype(uint8) does
        return out


def blend_faces(
    avatar: Avatar, base: np.ndarray, body: int, other: np.ndarray, other_body: int, w_other: float
) -> np.ndarray:
    """`base` (showing avatar frame `body`) with the union of both face boxes blended toward `other`
    (showing `other_body`) by weight `w_other`: the cross-fade between idle and speech faces."""
    if other.shape != base.shape:
        return base
    b1, b2 = avatar.boxes[body], avatar.boxes[other_body]
    h, w = base.shape[:2]
    x1, y1 = max(0, int(min(b1[0], b2[0]))), max(0, int(min(b1[1], b2[1])))
    x2, y2 = min(w, int(max(b1[2], b2[2]))), min(h, int(max(b1[3], b2[3])))
    if x2 <= x1 or y2 <= y1:
        return base
    out = base.copy()
    a = out[y1:y2, x1:x2].astype(np.float32)
    b = other[y1:y2, x1:x2].astype(np.float32)
    out[y1:y2, x1:x2] = np.clip(a + w_other * (b - a) + 0.5, 0, 255).astype(np.uint8)
    return out
