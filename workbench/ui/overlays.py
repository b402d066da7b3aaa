"""Pictures of what preparation found: the face box, the 68 landmarks and the blending mask on a frame.

Everything here is drawing only; the numbers come from the prepared `Avatar`.
"""

from __future__ import annotations

import cv2
import numpy as np

from workbench.avatars.model import Avatar

BOX_COLOUR = (80, 220, 80)  # BGR green
LANDMARK_COLOUR = (255, 220, 0)  # BGR cyan-ish
MASK_COLOUR = np.array([60, 60, 255], dtype=np.float32)  # BGR red tint
NO_FACE_COLOUR = (40, 40, 230)
DISPLAY_MAX_SIDE = 720  # previews are shown at most this big; the browser scales them anyway


def to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    """Gradio's image components take RGB; every frame in the workbench is BGR."""
    return np.ascontiguousarray(frame_bgr[..., ::-1])


def fit(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most `max_side`."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def mask_in_frame(avatar: Avatar, i: int) -> np.ndarray:
    """The blending mask of frame i placed in full-frame coordinates, float32 in [0, 1], shape (H, W)."""
    h, w = avatar.frame_size
    full = np.zeros((h, w), dtype=np.float32)
    x1, y1, x2, y2 = (int(v) for v in avatar.boxes[i])
    # The box may reach past the frame edge; only the part inside the frame is drawn.
    cx1, cy1, cx2, cy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if x2 - x1 <= 0 or y2 - y1 <= 0 or cx2 <= cx1 or cy2 <= cy1:
        return full
    m = cv2.resize(avatar.masks[i], (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255.0
    full[cy1:cy2, cx1:cx2] = m[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]
    return full


def draw_overlay(
    avatar: Avatar,
    i: int,
    box: bool = True,
    landmarks: bool = True,
    mask: bool = True,
    max_side: int = DISPLAY_MAX_SIDE,
) -> np.ndarray:
    """Frame i with its face box, landmarks and mask drawn on, as RGB for display."""
    if not 0 <= i < len(avatar):
        raise IndexError(f"frame {i} is outside 0..{len(avatar) - 1}")
    out = avatar.frames[i].astype(np.float32)
    if mask:
        a = mask_in_frame(avatar, i)[..., None] * 0.45
        out = out * (1.0 - a) + MASK_COLOUR * a
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    h, w = avatar.frame_size
    thick = max(1, round(max(h, w) / 400))
    if box:
        x1, y1, x2, y2 = (int(v) for v in avatar.boxes[i])
        colour = BOX_COLOUR if bool(avatar.has_face[i]) else NO_FACE_COLOUR
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, thick, cv2.LINE_AA)
        label = "face" if bool(avatar.has_face[i]) else "no face (borrowed box)"
        cv2.putText(
            out, label, (max(0, x1), max(12, y1 - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick, colour, thick, cv2.LINE_AA
        )
    if landmarks:
        r = max(1, thick)
        for x, y in avatar.landmarks[i]:
            if np.isfinite(x) and np.isfinite(y):
                cv2.circle(out, (int(round(x)), int(round(y))), r, LANDMARK_COLOUR, -1, cv2.LINE_AA)
    return fit(to_rgb(out), max_side)


def crop_strip(avatar: Avatar, i: int) -> np.ndarray:
    """The 256x256 crop the renderer sees, beside its mask and the crop with the mask applied (RGB)."""
    crop = avatar.crops[i]
    m = avatar.masks[i]
    mask_rgb = np.repeat(m[..., None], 3, axis=2)
    masked = (crop.astype(np.float32) * (m[..., None].astype(np.float32) / 255.0)).astype(np.uint8)
    return to_rgb(np.concatenate([crop, mask_rgb, masked], axis=1))


def label_image(image_rgb: np.ndarray, text: str) -> np.ndarray:
    """A caption band burnt into the top of an image, so a saved grid still says which value is which."""
    out = image_rgb.copy()
    h, w = out.shape[:2]
    band = max(18, h // 18)
    out[:band] = (out[:band].astype(np.float32) * 0.35).astype(np.uint8)
    scale = band / 30.0
    cv2.putText(
        out,
        text,
        (6, int(band * 0.75)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, band // 16),
        cv2.LINE_AA,
    )
    return out
