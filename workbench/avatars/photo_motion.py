"""Idle motion for a single photo: a still face turned into a short loop that sways a little and blinks.

A photo avatar has one frame, so its idle face is frozen and every spoken frame is the same picture with a
moving mouth. Here the photo becomes `LOOP_FRAMES` frames before preparation goes on: the head (a feathered
ellipse around the face, the background stays) turns, shifts and scales by a smooth, small similarity, and the
eyes close and open now and then (the upper lid slides down over the eye: the skin above it is stretched down).
Each frame's landmarks are the photo's moved by the same similarity, so the renderer rigs every frame where
its mouth really is: the mouth moves with the head and the lip-sync is untouched (blinks leave the landmarks
as they are, so the mouth rig, which measures the face by its eye centres, does not move with a blink).

Deterministic: the same photo gives the same loop. The loop plays ping-pong (as every avatar does), so the
motion is periodic and continuous at both ends.
"""

from __future__ import annotations

import cv2
import numpy as np

LOOP_FRAMES = 50  # 2 s at 25 fps; ping-pong makes it a 4 s cycle
MIN_FRAMES = 16  # fewer than this and the photo stays still (too large to hold that many copies)
MEMORY_BUDGET = 256 * 2**20  # bytes the loop's frames may take
SWAY_DEG = 1.2  # largest head turn in the image plane
SWAY_SHIFT = 0.012  # largest shift, of the face box width
SWAY_SCALE = 0.006  # largest scale change (a nod towards the camera)
BLINK_AT = 0.6  # where in the loop a blink is closed the most (ping-pong: twice per cycle, 1.6 s then 2.4 s apart)
BLINK_FRAMES = 7  # frames from open through closed to open
BLINK_DEPTH = 0.85  # share of the eye the lid covers at the bottom of a blink
LID_SKIN = 0.2  # of the eye width: the skin above the eye that slides down as the lid (less drags brows, glasses)


def sway(n: int = LOOP_FRAMES) -> np.ndarray:
    """(n, 4) angle (deg), dx, dy (face widths) and scale change per frame: slow sines with unrelated periods
    that start and end at rest, so the ping-pong loop has no jump."""
    t = np.arange(n) / max(n - 1, 1)
    ease = np.sin(np.pi * t)  # 0 at both ends of the loop
    out = np.stack(
        [
            SWAY_DEG * ease * np.sin(2 * np.pi * 1.0 * t),
            SWAY_SHIFT * ease * np.sin(2 * np.pi * 0.5 * t + 0.7),
            0.5 * SWAY_SHIFT * ease * np.sin(2 * np.pi * 1.5 * t + 1.9),
            SWAY_SCALE * ease * np.sin(2 * np.pi * 0.75 * t + 0.4),
        ],
        axis=1,
    )
    return out


def blink_amount(n: int = LOOP_FRAMES) -> np.ndarray:
    """(n,) 0 (open) .. BLINK_DEPTH (closed) per frame."""
    out = np.zeros(n)
    half = BLINK_FRAMES / 2
    for c in (round(BLINK_AT * (n - 1)),):
        k = np.arange(n)
        out = np.maximum(out, BLINK_DEPTH * np.clip(1.0 - np.abs(k - c) / half, 0.0, 1.0))
    return out


def _blink(img: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Both eyes closed by `amount`: within each eye's box, rows are sampled from higher up, so the lid and the
    skin above it slide down over the eye; feathered across the eye's width so it stays an eye shape."""
    if amount <= 0.01:
        return img
    out = img
    for sl in (slice(36, 42), slice(42, 48)):
        eye = lm[sl]
        x0, x1 = eye[:, 0].min(), eye[:, 0].max()
        w = x1 - x0
        top = eye[:, 1].min() - LID_SKIN * w  # the lid's skin above the eye is what comes down
        low = eye[:, 1].max() + 0.05 * w
        bx0, bx1 = int(np.floor(x0 - 0.2 * w)), int(np.ceil(x1 + 0.2 * w)) + 1
        by0, by1 = int(np.floor(top)), int(np.ceil(low)) + 1
        bx0, by0 = max(bx0, 0), max(by0, 0)
        bx1, by1 = min(bx1, img.shape[1]), min(by1, img.shape[0])
        if bx1 - bx0 < 3 or by1 - by0 < 3:
            continue
        yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
        # Across the eye the lid comes down furthest in the middle (an arc), not at the corners.
        cx = 0.5 * (x0 + x1)
        across = np.clip(1.0 - ((xx - cx) / (0.6 * w)) ** 2, 0.0, 1.0)
        a = amount * across
        lid_top = top + LID_SKIN * w  # the open eye's upper edge
        reach = lid_top + a * (low - lid_top)  # where the lid's edge is now
        # Above `reach`: the region [top, lid_top] stretched over [top, reach]; below: the eye, squeezed.
        src_y = np.where(
            yy <= reach,
            top + (yy - top) * (lid_top - top) / np.maximum(reach - top, 1e-3),
            low - (low - yy) * (low - lid_top) / np.maximum(low - reach, 1e-3),
        )
        src_y = np.where(a > 0.01, src_y, yy).astype(np.float32)
        patch = cv2.remap(img, xx, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        if out is img:
            out = img.copy()
        out[by0:by1, bx0:bx1] = patch
    return out


def loop_length(frame_shape: tuple[int, ...]) -> int:
    """Frames of idle motion a photo of this size gets within MEMORY_BUDGET (0: too large, it stays still)."""
    per = int(np.prod(frame_shape))
    n = min(LOOP_FRAMES, MEMORY_BUDGET // max(per, 1))
    return int(n) if n >= MIN_FRAMES else 0


def animate_still(frame: np.ndarray, box: np.ndarray, landmarks: np.ndarray, n: int = LOOP_FRAMES):
    """(n, H, W, 3) frames, (n, 4) boxes and (n, 68, 2) landmarks of the photo with idle motion."""
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    box = np.asarray(box, np.float64)
    lm = np.asarray(landmarks, np.float64)
    fw = float(box[2] - box[0])
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    # The head: an ellipse around the face box, grown (hair, ears, chin), feathered; the rest stays still.
    mask = np.zeros((h, w), np.float32)
    axes = (int(0.95 * fw), int(1.25 * (box[3] - box[1])))
    cv2.ellipse(mask, (int(centre[0]), int(centre[1] - 0.1 * fw)), axes, 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 0.15 * fw)[..., None]
    motion = sway(n)
    blink = blink_amount(n)
    frames = np.empty((n, h, w, 3), np.uint8)
    boxes = np.empty((n, 4), np.float64)
    lms = np.empty((n, 68, 2), np.float64)
    for k in range(n):
        ang, dx, dy, ds = motion[k]
        m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), float(ang), 1.0 + float(ds))
        m[:, 2] += [dx * fw, dy * fw]
        moved = cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        lm_k = lm @ m[:, :2].T + m[:, 2]
        moved = _blink(moved, lm_k, float(blink[k]))
        frames[k] = np.clip(mask * moved + (1.0 - mask) * frame + 0.5, 0, 255).astype(np.uint8)
        corners = np.array([[box[0], box[1]], [box[2], box[1]], [box[0], box[3]], [box[2], box[3]]]) @ m[:, :2].T
        corners += m[:, 2]
        boxes[k] = [*corners.min(axis=0), *corners.max(axis=0)]
        lms[k] = lm_k
    return frames, boxes, lms
