"""The bbox_shift grid's tiles: the whole face (chin included) with the mouth below it, large, and where it differs.

At thumbnail size two variants of one frame look alike: what bbox_shift changes is the mouth region. Each tile
shows the face (a square around all 68 landmarks, so the chin is never cut), then the mouth region at twice the
face's scale, with the pixels that differ from the first value's preview outlined. A blank band at the bottom
takes the gallery's caption, which Gradio draws over the tile.
"""

from __future__ import annotations

import cv2
import numpy as np

from workbench.avatars.model import Avatar

TILE_W = 300
CAPTION_BAND = 30  # px at the bottom of a tile: the gallery's caption covers this, not the mouth
DIFF_LEVEL = 20  # grey levels: a change below this is noise or a faint edge, not the variant
MIN_CHANGE_AREA = 150  # px of the 300x150 mouth view: smaller changed specks are not outlined
DIFF_COLOUR = (255, 0, 255)  # magenta, BGR and RGB alike
TILE_H = TILE_W + 4 + TILE_W // 2 + CAPTION_BAND  # face, separator, mouth, caption band
# Gradio draws gallery thumbnails square, which shrinks a tall tile to a third of its cell: the app's CSS gives
# the tuning gallery's thumbnails the tiles' own shape.
GALLERY_CSS = f"#tune-gallery .thumbnail-item {{aspect-ratio: {TILE_W} / {TILE_H}; height: auto}}\n"


def face_box(avatar: Avatar, i: int, margin: float = 0.15) -> tuple[int, int, int, int]:
    """A square around frame i's 68 landmarks (brows to chin) and its face box, `margin` larger, inside the frame."""
    pts = np.asarray(avatar.landmarks[i], dtype=np.float32)
    bx1, by1, bx2, by2 = (float(v) for v in avatar.boxes[i])
    x1, y1 = min(pts[:, 0].min(), bx1), min(pts[:, 1].min(), by1)
    x2, y2 = max(pts[:, 0].max(), bx2), max(pts[:, 1].max(), by2)
    h, w = avatar.frame_size
    side = int(min(max(x2 - x1, y2 - y1) * (1 + 2 * margin), h, w))
    cx, cy = int((x1 + x2) / 2), int((y1 + y2) / 2)
    left = int(np.clip(cx - side // 2, 0, w - side))
    top = int(np.clip(cy - side // 2, 0, h - side))
    return left, top, left + side, top + side


def mouth_box(avatar: Avatar, i: int) -> tuple[int, int, int, int]:
    """A 2:1 box around frame i's mouth (landmarks 48-67) and the chin below it, inside the frame."""
    pts = np.asarray(avatar.landmarks[i], dtype=np.float32)
    mouth = pts[48:68]
    jaw_w = pts[12, 0] - pts[4, 0]  # the jaw's width at mouth height: lips, cheeks and chin all in view
    width = max(jaw_w, (mouth[:, 0].max() - mouth[:, 0].min()) * 2.0) * 1.1
    height = width / 2
    cx = (pts[4, 0] + pts[12, 0]) / 2
    cy = (pts[33, 1] + pts[8, 1]) / 2  # from under the nose to the chin: where the mask's upper edge moves
    h, w = avatar.frame_size
    width, height = min(width, w), min(height, h)
    left = int(np.clip(cx - width / 2, 0, w - width))
    top = int(np.clip(cy - height / 2, 0, h - height))
    return left, top, left + int(width), top + int(height)


def _crop(frame: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    x1, y1, x2, y2 = box
    region = frame[y1:y2, x1:x2]
    interp = cv2.INTER_AREA if region.shape[1] > size[0] else cv2.INTER_CUBIC
    return cv2.resize(region, size, interpolation=interp)


def tiles(avatar: Avatar, i: int, frames: list[np.ndarray]) -> list[np.ndarray]:
    """One tile per rendered frame (BGR in, BGR out): face, mouth ×2 with the change from frames[0] outlined."""
    fbox, mbox = face_box(avatar, i), mouth_box(avatar, i)
    mouth_size = (TILE_W, TILE_W // 2)
    first = _crop(frames[0], mbox, mouth_size).astype(np.int16)
    out = []
    for k, frame in enumerate(frames):
        face = _crop(frame, fbox, (TILE_W, TILE_W))
        mouth = _crop(frame, mbox, mouth_size)
        if k > 0:
            # The region that changed, as one or two smooth outlines (not every pixel of codec-level noise).
            changed = (np.abs(mouth.astype(np.int16) - first).max(axis=2) > DIFF_LEVEL).astype(np.uint8)
            changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            changed = cv2.morphologyEx(changed, cv2.MORPH_CLOSE, np.ones((15, 15), np.uint8))
            contours, _ = cv2.findContours(changed, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            big = [c for c in contours if cv2.contourArea(c) >= MIN_CHANGE_AREA]
            cv2.drawContours(mouth, big, -1, DIFF_COLOUR, 2, cv2.LINE_AA)
        # A thin line between face and mouth, and the band the caption covers.
        sep = np.full((4, TILE_W, 3), 255, np.uint8)
        band = np.full((CAPTION_BAND, TILE_W, 3), 255, np.uint8)
        out.append(np.concatenate([face, sep, mouth, band], axis=0))
    return out
