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
