"""Blending masks: where a generated face may replace the avatar frame.

MuseTalk v1.5 builds the mask from a face-parsing label map (BiSeNet, CelebAMask-HQ's 19 classes)
of a square region 1.5x the face box, parsed at 512x512:
- `raw` keeps skin and mouth (skin, mouth, upper and lower lip);
- `jaw` grows the skin downwards and sideways with a cone-shaped kernel so the generated jaw may move,
  narrows the cheeks outside the middle band (`left/right_cheek_width` pixels either side of the centre
  at 512 scale), drops the nose, and keeps the mouth.
Then only the face box is kept, only its lower part (below the region's vertical middle), and the edge
is softened by a Gaussian blur of 0.1 x the region's width.

Without BiSeNet weights the same steps run on a label map drawn from the 68 landmarks (jaw contour
and brows for skin, nose, eyes, lips), so the modes and cheek widths mean the same thing either way.
The result is stored per frame as a (256, 256) uint8 mask in crop coordinates; everything above the
blur's reach of the middle is exactly 0, so the compositor leaves the upper face pixel-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from workbench.avatars.model import PrepParams
from workbench.config import CROP_SIZE, ParsingMode
from workbench.faces.landmarks import missing_weights

log = logging.getLogger(__name__)

PARSE_SIZE = 512  # BiSeNet's input size; the jaw kernel and cheek widths are in these pixels
EXPAND = 1.5  # the parsed region is a square 1.5x the face box's longer side
UPPER_BOUNDARY_RATIO = 0.5  # rows of the region above this fraction are never blended
BLUR_RATIO = 0.1  # Gaussian kernel = 0.1 x region width (MuseTalk's real-time preparation)

# CelebAMask-HQ labels (the BiSeNet face-parsing model's output classes)
BACKGROUND, SKIN, L_BROW, R_BROW, L_EYE, R_EYE, EYE_G, L_EAR, R_EAR, EAR_R = range(10)
NOSE, MOUTH, U_LIP, L_LIP, NECK = 10, 11, 12, 13, 14
MOUTH_LABELS = (MOUTH, U_LIP, L_LIP)

BISENET_FILES = (Path("face-parse-bisent") / "79999_iter.pth", Path("face-parse-bisent") / "resnet18-5c106cde.pth")


class FaceParserLike(Protocol):
    def parse(self, img_bgr: np.ndarray) -> np.ndarray: ...


# --- label map → mask (MuseTalk's parsing modes) -------------------------------------------
@cache
def jaw_kernel(cone_height: int = 21, tail_height: int = 12) -> np.ndarray:
    """The structuring element of `jaw` mode: an empty top, a widening cone, then a straight tail.

    Dilating with it (anchor at the centre) extends the skin region more upwards than downwards and
    rounds the chin into a point, which lets the regenerated jaw open.
    """
    size = cone_height + tail_height
    k = np.zeros((size, size), dtype=np.uint8)
    c = size // 2
    for row in range(cone_height // 2, cone_height):
        half = row - cone_height // 2
        k[row, c - half : c + half + 1] = 1
    base_half = (int(k[cone_height - 1].sum()) // 2) if cone_height > 0 else 0
    k[cone_height:, max(0, c - base_half) : min(size, c + base_half + 1)] = 1
    return k


@cache
def _cheek_zone(left_cheek_width: int, right_cheek_width: int, size: int = PARSE_SIZE) -> np.ndarray:
    """255 on the cheeks (outside the middle band of the region), 0 in the band."""
    m = np.zeros((size, size), dtype=np.uint8)
    c = size // 2
    m[:, : max(0, c - left_cheek_width + 1)] = 255
    m[:, min(size, c + right_cheek_width) :] = 255
    return m


_CHEEK_ERODE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (35, 3))


def parsing_to_mask(
    labels: np.ndarray,
    mode: ParsingMode = "jaw",
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
) -> np.ndarray:
    """A (512, 512) label map → uint8 mask, 255 where the face may be regenerated, as MuseTalk's modes do."""
    labels = np.asarray(labels)
    mouth = np.isin(labels, MOUTH_LABELS)
    if mode == "raw":
        keep = (labels == SKIN) | mouth
    elif mode == "jaw":
        skin = (labels == SKIN).astype(np.uint8) * 255
        dilated = cv2.dilate(skin, jaw_kernel(), iterations=1)
        narrowed = cv2.erode(dilated, _CHEEK_ERODE, iterations=2)
        cheeks = _cheek_zone(int(left_cheek_width), int(right_cheek_width), labels.shape[0])
        region = cv2.bitwise_or(cv2.bitwise_and(narrowed, cheeks), cv2.bitwise_and(dilated, cv2.bitwise_not(cheeks)))
        keep = ((region == 255) & (labels != NOSE)) | mouth
    else:
        raise ValueError(f"unknown parsing mode {mode!r}: choose 'jaw' or 'raw'")
    return keep.astype(np.uint8) * 255


# --- the parsed region --------------------------------------------------------------------
def expanded_box(box: np.ndarray, expand: float = EXPAND) -> tuple[int, int, int, int]:
    """The square region around the face box that is parsed (may reach outside the frame)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    xc, yc = (x1 + x2) // 2, (y1 + y2) // 2
    s = int(max(x2 - x1, y2 - y1) // 2 * expand)
    s = max(s, 1)
    return xc - s, yc - s, xc + s, yc + s


def crop_padded(frame: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """frame[region] with black where the region leaves the frame."""
    x1, y1, x2, y2 = region
    h, w = frame.shape[:2]
    out = np.zeros((y2 - y1, x2 - x1) + frame.shape[2:], dtype=frame.dtype)
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = frame[sy1:sy2, sx1:sx2]
    return out


def bisenet_labels(frame: np.ndarray, region: tuple[int, int, int, int], face_parser: FaceParserLike) -> np.ndarray:
    """BiSeNet's (512, 512) label map of the region, parsed at 512 as MuseTalk does."""
    from PIL import Image

    # PIL's bilinear resize (MuseTalk's) filters over the whole footprint when shrinking; cv2's does not.
    region_img = Image.fromarray(np.ascontiguousarray(crop_padded(frame, region)))
    img = np.asarray(region_img.resize((PARSE_SIZE, PARSE_SIZE), Image.Resampling.BILINEAR))
    labels = np.asarray(face_parser.parse(img))
    if labels.shape != (PARSE_SIZE, PARSE_SIZE):
        labels = cv2.resize(labels.astype(np.uint8), (PARSE_SIZE, PARSE_SIZE), interpolation=cv2.INTER_NEAREST)
    return labels


def _hull(points: np.ndarray) -> np.ndarray:
    return cv2.convexHull(np.round(points).astype(np.int32))


def landmark_labels(landmarks: np.ndarray, region: tuple[int, int, int, int], size: int = PARSE_SIZE) -> np.ndarray:
    """A CelebAMask-HQ-style label map of the region drawn from 68 landmarks (skin, nose, eyes, lips)."""
    x1, y1, x2, y2 = region
    scale = size / max(1, x2 - x1)
    p = (np.asarray(landmarks, dtype=np.float64) - (x1, y1)) * scale
    labels = np.zeros((size, size), dtype=np.uint8)
    # Skin: the jaw contour closed over the brows (the forehead lies above the blended part anyway).
    skin = np.concatenate([p[0:17], p[26:16:-1]])
    cv2.fillPoly(labels, [np.round(skin).astype(np.int32)], SKIN)
    cv2.fillPoly(labels, [_hull(p[36:42])], L_EYE)
    cv2.fillPoly(labels, [_hull(p[42:48])], R_EYE)
    # Nose: the bridge (27-30) given the width of a third of the nostrils, and the nostril wings (31-35)
    # widened a little, since the wings reach beyond the outer nostril landmarks.
    nostril_w = max(1.0, p[35, 0] - p[31, 0])
    bridge = np.concatenate([p[27:31] - (nostril_w / 6, 0), p[27:31] + (nostril_w / 6, 0)])
    wings = p[31:36].copy()
    wings[0, 0] -= nostril_w * 0.2
    wings[4, 0] += nostril_w * 0.2
    cv2.fillPoly(labels, [_hull(np.concatenate([bridge, wings, p[30:31] + (0, nostril_w * 0.1)]))], NOSE)
    # Lips between the outer (48-59) and inner (60-67) contours; the inner contour is the open mouth.
    upper = np.concatenate([p[48:55], p[64:59:-1]])
    lower = np.concatenate([p[54:60], p[48:49], p[60:61], p[67:63:-1]])
    cv2.fillPoly(labels, [np.round(upper).astype(np.int32)], U_LIP)
    cv2.fillPoly(labels, [np.round(lower).astype(np.int32)], L_LIP)
    cv2.fillPoly(labels, [np.round(p[60:68]).astype(np.int32)], MOUTH)
    return labels


# --- label map of the region → mask in crop coordinates ------------------------------------
def _blur_kernel(side: int, blur_ratio: float = BLUR_RATIO) -> int:
    return int(blur_ratio * side // 2 * 2) + 1


def region_mask(
    labels: np.ndarray,
    box: np.ndarray,
    region: tuple[int, int, int, int],
    mode: ParsingMode = "jaw",
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
) -> np.ndarray:
    """MuseTalk's blending mask over the whole parsed region, (side, side) uint8: what its real-time
    preparation stores beside the 1.5x crop box."""
    from PIL import Image

    x1, y1, x2, y2 = (int(v) for v in box)
    rx1, ry1, rx2, _ = region
    side = rx2 - rx1
    m = parsing_to_mask(labels, mode, left_cheek_width, right_cheek_width)
    m = np.asarray(Image.fromarray(m).resize((side, side), Image.Resampling.BICUBIC))  # PIL's default, as MuseTalk
    bx1, by1, bx2, by2 = x1 - rx1, y1 - ry1, x2 - rx1, y2 - ry1
    kept = np.zeros_like(m)
    kept[by1:by2, bx1:bx2] = m[by1:by2, bx1:bx2]  # only the face box is ever pasted
    kept[: int(side * UPPER_BOUNDARY_RATIO)] = 0  # the upper face is never regenerated
    k = _blur_kernel(side)
    return cv2.GaussianBlur(kept, (k, k), 0)


def mask_from_labels(
    labels: np.ndarray,
    box: np.ndarray,
    region: tuple[int, int, int, int],
    mode: ParsingMode = "jaw",
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
) -> np.ndarray:
    """MuseTalk's blending mask of one frame as (256, 256) uint8 in crop coordinates (the face box)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    rx1, ry1 = region[0], region[1]
    full = region_mask(labels, box, region, mode, left_cheek_width, right_cheek_width)
    face = full[y1 - ry1 : y2 - ry1, x1 - rx1 : x2 - rx1]
    interp = cv2.INTER_AREA if face.shape[0] > CROP_SIZE and face.shape[1] > CROP_SIZE else cv2.INTER_LINEAR
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE), interpolation=interp)


def zero_rows(box: np.ndarray) -> int:
    """How many top rows of the (256, 256) crop mask are exactly 0 for this box: above the middle of the
    parsed region less the blur's half-width (and a row for resampling)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    rx1, ry1, rx2, _ = expanded_box(box)
    side = rx2 - rx1
    first_nonzero = ry1 + int(side * UPPER_BOUNDARY_RATIO) - _blur_kernel(side) // 2 - y1
    return max(0, int(np.floor(first_nonzero * CROP_SIZE / max(1, y2 - y1))) - 1)


def frame_mask(
    frame: np.ndarray,
    box: np.ndarray,
    landmarks: np.ndarray,
    mode: ParsingMode = "jaw",
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
    face_parser: FaceParserLike | None = None,
) -> np.ndarray:
    """The blending mask of one frame: BiSeNet's parsing when a parser is given, else the landmarks'."""
    region = expanded_box(box)
    labels = (
        bisenet_labels(frame, region, face_parser) if face_parser is not None else landmark_labels(landmarks, region)
    )
    return mask_from_labels(labels, box, region, mode, left_cheek_width, right_cheek_width)


def make_masks(
    frames: np.ndarray,
    boxes: np.ndarray,
    landmarks: np.ndarray,
    mode: ParsingMode = "jaw",
    left_cheek_width: int = PrepParams.left_cheek_width,
    right_cheek_width: int = PrepParams.right_cheek_width,
    face_parser: FaceParserLike | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray:
    """(N, 256, 256) uint8 masks for every frame."""
    n = len(frames)
    out = np.empty((n, CROP_SIZE, CROP_SIZE), dtype=np.uint8)
    for i in range(n):
        out[i] = frame_mask(frames[i], boxes[i], landmarks[i], mode, left_cheek_width, right_cheek_width, face_parser)
        if progress is not None and (i % 10 == 0 or i == n - 1):
            progress((i + 1) / n, f"blending masks {i + 1}/{n}")
    return out


def resolve_mask_kind(mask_source: str, face_parser: FaceParserLike | None) -> str:
    """'bisenet' or 'landmarks' for a PrepParams.mask_source given the parser at hand.

    "auto" uses BiSeNet when a parser was supplied (the engine supplies one when its weights exist);
    "bisenet" without a parser is an error rather than a silent change of masks.
    """
    if mask_source == "landmarks":
        return "landmarks"
    if mask_source == "bisenet":
        if face_parser is None:
            raise missing_weights([Path("models") / f for f in BISENET_FILES], "face-parse-bisent")
        return "bisenet"
    if mask_source == "auto":
        return "bisenet" if face_parser is not None else "landmarks"
    raise ValueError(f"unknown mask_source {mask_source!r}: choose 'auto', 'landmarks' or 'bisenet'")
