"""MuseTalk's face box: the region cut out, resized to 256x256 and regenerated.

The box is built from the landmarks so that its vertical middle sits on landmark 29 (lower nose
bridge) moved by `bbox_shift`: the UNet regenerates the lower half of the crop, so the shift decides
where the generated mouth region begins. Landmarks are truncated to integers first, as MuseTalk
does (it casts DWPose's float keypoints with astype(int32)).
"""

from __future__ import annotations

import numpy as np

NOSE_BRIDGE_TOP, NOSE_MID, NOSE_TIP = 28, 29, 30  # 68-point indices MuseTalk measures the shift range on


def landmark_box(landmarks: np.ndarray, bbox_shift: int = 0) -> tuple[int, int, int, int]:
    """MuseTalk's box before clipping: x from the landmarks' extent, y2 the lowest landmark, y1 mirrored
    about landmark 29 (after `bbox_shift` is added to its y); y1 floored at 0 as MuseTalk does."""
    lm = np.asarray(landmarks).astype(np.int32)
    mid = int(lm[NOSE_MID, 1]) + int(bbox_shift)
    y2 = int(lm[:, 1].max())
    half = y2 - mid
    y1 = max(0, mid - half)
    return int(lm[:, 0].min()), int(y1), int(lm[:, 0].max()), y2


def _clip(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def _degenerate(box: tuple[int, int, int, int]) -> bool:
    x1, y1, x2, y2 = box
    return x2 - x1 <= 0 or y2 - y1 <= 0


def face_box(
    landmarks: np.ndarray,
    frame_shape: tuple[int, ...],
    bbox_shift: int = 0,
    extra_margin: int = 0,
    detector_box: np.ndarray | None = None,
) -> np.ndarray:
    """The crop box (4,) int32 x1, y1, x2, y2 inside a frame of `frame_shape` (H, W, ...).

    A degenerate landmark box (a shift that pushes the middle below the chin, landmarks off-frame) or one
    reaching past the left edge falls back to the detector's box, as MuseTalk does; v1.5's `extra_margin` then extends the bottom either way.
    """
    height, width = int(frame_shape[0]), int(frame_shape[1])
    raw = landmark_box(landmarks, bbox_shift)
    box = _clip(raw, height, width)
    # The reference also falls back when the landmarks reach past the left edge (x1 < 0). Past the right or
    # bottom edge it keeps the box and stretches the frame-clipped crop into it; here the box is clipped
    # instead (a deliberate deviation, see the README), so crop and box always agree.
    if _degenerate(box) or (raw[0] < 0 and detector_box is not None):
        if detector_box is None:
            raise ValueError(f"the landmark box {box} is empty and there is no detector box to fall back on")
        box = _clip(tuple(int(v) for v in np.clip(np.asarray(detector_box, dtype=np.float64), 0, None)), height, width)
        if _degenerate(box):
            raise ValueError(f"both the landmark box and the detector box {tuple(detector_box)} are empty")
    x1, y1, x2, y2 = box
    y2 = min(y2 + int(extra_margin), height)
    return np.array([x1, y1, x2, y2], dtype=np.int32)


def bbox_range(landmarks: np.ndarray, has_face: np.ndarray | None = None) -> tuple[int, int]:
    """The recommended bbox_shift range (-a, b) MuseTalk prints as "[ -a ~ b ]".

    a = mean over frames of (lm30.y - lm29.y), b = mean of (lm29.y - lm28.y), each truncated to int;
    only frames with a detected face count.
    """
    lm = np.asarray(landmarks)
    if lm.ndim == 2:
        lm = lm[None]
    if has_face is not None:
        lm = lm[np.asarray(has_face, dtype=bool)]
    if len(lm) == 0:
        return 0, 0
    y = lm[:, :, 1].astype(np.int32)
    minus = int(np.mean(y[:, NOSE_TIP] - y[:, NOSE_MID]))
    plus = int(np.mean(y[:, NOSE_MID] - y[:, NOSE_BRIDGE_TOP]))
    return -minus, plus


def format_bbox_range(rng: tuple[int, int]) -> str:
    """The measured bbox_shift range as the UI, the CLI and the logs show it: "[-15 ~ 21]"."""
    return f"[{rng[0]} ~ {rng[1]}]"


def musetalk_range_line(rng: tuple[int, int], current: int = 0) -> str:
    """The range in MuseTalk's own words (its preprocessing prints this line), to compare with its output."""
    return f"Manually adjust range : [ {rng[0]}~{rng[1]} ] , the current value: {current}"
