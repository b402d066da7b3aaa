"""Deliberate regressions injected into a generated case's output: the controls that show the gate works.

A manifest's generated case may carry `degrade:` with any of
- `delay_frames`: the renderer is driven by the audio delayed this many frames (the mouth moves late), while
  the scores use the undelayed audio;
- `blur_mouth`: a Gaussian blur of this sigma (pixels) over the mouth region of every output frame;
- `jitter_px`: the mouth region moved by a random whole-pixel offset in [-px, px] on each axis, per frame.
The mouth region is the avatar's own lips (landmarks of the avatar frame behind each output frame), grown by
a quarter of the inter-ocular distance and by half of it downwards (an open jaw drops below the source's lips),
blended in through a feathered ellipse so the change has no edge of its own.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from workbench.avatars.model import Avatar


class Degrade(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_frames: int = Field(0, ge=0, le=15, description="drive the renderer with audio this many frames late")
    blur_mouth: float = Field(0.0, ge=0, le=20, description="Gaussian sigma (px) over the mouth region")
    jitter_px: float = Field(0.0, ge=0, le=8, description="random mouth offset per frame, at most this many px")
    seed: int = 0

    @property
    def any(self) -> bool:
        return bool(self.delay_frames or self.blur_mouth or self.jitter_px)


def mouth_mask(lm: np.ndarray, shape: tuple[int, ...]) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """(x0, y0, x1, y1), feathered float mask (h, w, 1) of the mouth region of one frame; None off-frame."""
    lm = np.asarray(lm, np.float64)
    iod = float(np.linalg.norm(lm[45] - lm[36]))
    lo, hi = lm[48:60].min(axis=0), lm[48:60].max(axis=0)
    g = 0.25 * iod
    x0, y0 = int(np.floor(lo[0] - g)), int(np.floor(lo[1] - g))
    x1, y1 = int(np.ceil(hi[0] + g)), int(np.ceil(hi[1] + g + 0.5 * iod))
    h, w = shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    m = np.zeros((y1 - y0, x1 - x0), np.float32)
    w_, h_ = x1 - x0, y1 - y0
    cv2.ellipse(m, (w_ // 2, h_ // 2), (max(1, int(0.6 * w_)), max(1, int(0.6 * h_))), 0, 0, 360, 1.0, -1)
    m = cv2.GaussianBlur(m, (0, 0), max(1.0, 0.08 * iod))
    return (x0, y0, x1, y1), m[..., None]


def _blend(frame: np.ndarray, box, mask: np.ndarray, new: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    region = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(region + mask * (new.astype(np.float32) - region) + 0.5, 0, 255).astype(np.uint8)


def degrade_frames(frames: list[np.ndarray], avatar: Avatar, spec: Degrade, start: int = 0) -> list[np.ndarray]:
    """Copies of `frames` (output frames start.. of a file render) with the mouth blurred and/or jittered."""
    if not (spec.blur_mouth or spec.jitter_px):
        return frames
    rng = np.random.default_rng(spec.seed)
    out = []
    for j, f in enumerate(frames):
        f = f.copy()
        got = mouth_mask(avatar.landmarks[avatar.loop_index(start + j)], f.shape)
        if got is not None:
            (x0, y0, x1, y1), m = got
            if spec.blur_mouth:
                pad = int(3 * spec.blur_mouth) + 1
                X0, Y0 = max(0, x0 - pad), max(0, y0 - pad)
                blurred = cv2.GaussianBlur(f[Y0 : y1 + pad, X0 : x1 + pad], (0, 0), spec.blur_mouth)
                _blend(f, (x0, y0, x1, y1), m, blurred[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0])
            if spec.jitter_px:
                k = int(np.floor(spec.jitter_px))
                dx, dy = (int(v) for v in rng.integers(-k, k + 1, size=2)) if k else (0, 0)
                shifted = np.roll(f, (dy, dx), axis=(0, 1))  # pixel (y, x) takes the one at (y - dy, x - dx)
                _blend(f, (x0, y0, x1, y1), m, shifted[y0:y1, x0:x1])
        out.append(f)
    return out
