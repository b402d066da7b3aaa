"""Face tracks of a video: detection, IoU tracking, SyncNet's 224x224 crops, and 68 landmarks per tracked frame.

Tracking follows syncnet_python's `run_pipeline.py`: per-frame face boxes, a track grows while consecutive
detections overlap by IoU > 0.5 with at most `num_failed_det` frames between them, boxes are linearly
interpolated over gaps, short or small tracks are dropped, and the crop centre and size are median-filtered
(kernel 13) before a square crop padded by `crop_scale` is cut out and resized to 224x224.

Two box detectors: S3FD (`sfd_face.pth`, the protocol's) when its weights are present, else dlib's HOG. HOG
misses faces rolled by more than ~15 degrees (a singer tilting his head), so when nothing overlaps the track
at 0 degrees it retries on copies rotated by ±20 and ±35 degrees.

Landmarks come from dlib's 68-point shape predictor, fitted twice per frame: once in the box (rolled by the
previous frame's angle), then again in the box implied by those landmarks with the image rotated upright.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from scipy.signal import medfilt

from workbench.evaluation.errors import NoFaceError, SyncNetWeightsMissing
from workbench.faces.landmarks import S3FD_FILES, dlib_model_dir

log = logging.getLogger(__name__)

# syncnet_python run_pipeline.py defaults
IOU_THRESHOLD = 0.5
NUM_FAILED_DET = 25
MIN_TRACK = 100
MIN_FACE_SIZE = 100
CROP_SCALE = 0.40
SMOOTH_KERNEL = 13
CROP_SIZE = 224
PAD_VALUE = 110

# dlib's HOG box relative to its own 68 landmarks, measured on the sample clips (45 detections):
# centre = landmark mean + (0.04, -0.10) * spread, width = 2.80 * spread, spread = RMS distance to the mean.
_BOX_CENTRE_OFFSET = np.array([0.04, -0.10])
_BOX_WIDTH_PER_SPREAD = 2.80
_ROTATION_ANGLES = (-20.0, 20.0, -35.0, 35.0)


class BoxDetector(Protocol):
    name: str

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        """(K, 5) float rows x1, y1, x2, y2, score in full-frame pixels."""
        ...


@dataclass
class Track:
    """One face track: the frames it covers and an (interpolated) box for each."""

    frames: np.ndarray  # (T,) int, consecutive
    boxes: np.ndarray  # (T, 4) float x1, y1, x2, y2

    def __len__(self) -> int:
        return int(len(self.frames))

    @property
    def mean_size(self) -> float:
        return float(max(np.mean(self.boxes[:, 2] - self.boxes[:, 0]), np.mean(self.boxes[:, 3] - self.boxes[:, 1])))


# --- detectors ------------------------------------------------------------------------------
class S3FDBoxes:
    """The protocol's detector: S3FD at scale 0.25 with confidence 0.9, as run_pipeline.py calls it."""

    name = "s3fd"

    def __init__(self, weights: str | Path, device: str | None = None, scale: float = 0.25, conf_th: float = 0.9):
        from workbench.faces.s3fd import S3FD  # lazy: torch, only when the S3FD detector is chosen

        self.net = S3FD.from_file(weights, device)
        self.scales = (scale,)
        self.conf_th = conf_th

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        return np.asarray(self.net.detect(frame_bgr, conf_th=self.conf_th, scales=self.scales), dtype=np.float64)


class DlibBoxes:
    """dlib HOG on a copy whose long side is `detect_side`, retried on rotated copies when it finds nothing
    near the previous frame's face, and upsampled when it finds nothing at all. Stateful across consecutive frames of one video: call `reset()` between videos."""

    name = "dlib-hog"

    def __init__(self, detect_side: int = 640, angles: Sequence[float] = _ROTATION_ANGLES):
        import dlib

        self._hog = dlib.get_frontal_face_detector()
        self.detect_side = detect_side
        self.angles = tuple(angles)
        self._last: np.ndarray | None = None

    def reset(self) -> None:
        self._last = None

    def _run(self, gray: np.ndarray, angle: float, upsample: int = 0) -> np.ndarray:
        h, w = gray.shape
        if angle:
            m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
            img = cv2.warpAffine(gray, m, (w, h))
        else:
            img = gray
        rects, scores, _ = self._hog.run(img, upsample, 0.0)
        if not rects:
            return np.zeros((0, 5))
        out = []
        inv = cv2.invertAffineTransform(cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0))
        for r, s in zip(rects, scores, strict=True):
            cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
            cx, cy = inv @ np.array([cx, cy, 1.0]) if angle else (cx, cy)
            half = (r.right() - r.left()) / 2
            out.append((cx - half, cy - half, cx + half, cy + half, float(s)))
        return np.array(out)

    def detect(self, frame_bgr: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(np.ascontiguousarray(frame_bgr), cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.detect_side / max(h, w))
        small = (
            cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
        )
        dets = self._run(small, 0.0)
        if not self._near_last(dets / _scale_vec(scale)):
            for angle in self.angles:
                extra = self._run(small, angle)
                if len(extra):
                    dets = np.concatenate([dets, extra]) if len(dets) else extra
                    if self._near_last(extra / _scale_vec(scale)):
                        break
        if not len(dets):  # a small face: HOG needs it upsampled (4x the pixels, so only as a last resort)
            dets = self._run(small, 0.0, upsample=1)
        dets = dets / _scale_vec(scale) if len(dets) else np.zeros((0, 5))
        if len(dets):
            near = [d for d in dets if self._last is not None and iou(d[:4], self._last) > 0.3]
            self._last = (near[0] if near else max(dets, key=lambda d: (d[2] - d[0]) * d[4]))[:4]
        return dets

    def _near_last(self, dets: np.ndarray) -> bool:
        if len(dets) == 0:
            return False
        if self._last is None:
            return True
        return any(iou(d[:4], self._last) > 0.3 for d in dets)


def _scale_vec(scale: float) -> np.ndarray:
    return np.array([scale, scale, scale, scale, 1.0])


def sfd_weights_path(models_dir: str | Path | None) -> Path | None:
    """sfd_face.pth where `workbench weights download` puts it (models/syncnet_eval/), or any layout the
    landmark module knows; None when absent."""
    if models_dir is None:
        return None
    for rel in (Path("syncnet_eval") / "sfd_face.pth", *S3FD_FILES):
        p = Path(models_dir) / rel
        if p.is_file():
            return p
    return None


def get_box_detector(
    models_dir: str | Path | None = None, prefer: str = "auto", device: str | None = None
) -> BoxDetector:
    """S3FD when `prefer` is "s3fd" or "auto" and its weights exist; else dlib HOG."""
    if prefer not in ("auto", "s3fd", "dlib"):
        raise ValueError(f"unknown face detector {prefer!r}: choose auto, s3fd or dlib")
    weights = sfd_weights_path(models_dir)
    if prefer == "s3fd" and weights is None:
        raise SyncNetWeightsMissing(
            f"S3FD weights (sfd_face.pth) not found under {models_dir}/syncnet_eval/; "
            "run `workbench weights download syncnet_eval` on a machine with internet"
        )
    if prefer != "dlib" and weights is not None:
        return S3FDBoxes(weights, device)
    return DlibBoxes()


# --- tracking -------------------------------------------------------------------------------
def iou(a: Sequence[float], b: Sequence[float]) -> float:
    xa, ya = max(a[0], b[0]), max(a[1], b[1])
    xb, yb = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, xb - xa) * max(0.0, yb - ya)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detect_all(
    frames: Sequence[np.ndarray], detector: BoxDetector, progress: Callable[[float, str], None] | None = None
) -> list[np.ndarray]:
    if hasattr(detector, "reset"):
        detector.reset()
    out = []
    n = len(frames)
    for i, f in enumerate(frames):
        out.append(np.asarray(detector.detect(f), dtype=np.float64).reshape(-1, 5))
        if progress is not None and (i % 10 == 0 or i == n - 1):
            progress((i + 1) / n, f"faces {i + 1}/{n}")
    return out


def build_tracks(
    detections: Sequence[np.ndarray],
    iou_threshold: float = IOU_THRESHOLD,
    num_failed_det: int = NUM_FAILED_DET,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
) -> list[Track]:
    """Greedy IoU tracking as in run_pipeline.py's `track_shot`; a track must be longer than `min_track` frames."""
    pool = [[(i, d[:4].copy()) for d in dets] for i, dets in enumerate(detections)]
    tracks: list[Track] = []
    while True:
        track: list[tuple[int, np.ndarray]] = []
        for frame_faces in pool:
            for k, face in enumerate(frame_faces):
                if not track:
                    track.append(face)
                    del frame_faces[k]
                    break
                if face[0] - track[-1][0] > num_failed_det:
                    break
                if iou(face[1], track[-1][1]) > iou_threshold:
                    track.append(face)
                    del frame_faces[k]
                    break
        if not track:
            break
        if len(track) > min_track:
            frame_nums = np.array([f for f, _ in track])
            boxes = np.stack([b for _, b in track])
            full = np.arange(frame_nums[0], frame_nums[-1] + 1)
            interp = np.stack([np.interp(full, frame_nums, boxes[:, j]) for j in range(4)], axis=1)
            t = Track(frames=full, boxes=interp)
            if t.mean_size > min_face_size:
                tracks.append(t)
    return tracks


def main_track(tracks: Sequence[Track]) -> Track:
    """The longest track (ties: the larger face): the talking head."""
    if not tracks:
        raise NoFaceError("no face track long enough was found")
    return max(tracks, key=lambda t: (len(t), t.mean_size))


def track_video(
    frames: Sequence[np.ndarray],
    detector: BoxDetector,
    min_track: int | None = None,
    min_face_size: float = MIN_FACE_SIZE,
    progress: Callable[[float, str], None] | None = None,
) -> list[Track]:
    """All face tracks of a clip. `min_track` defaults to the protocol's 100 frames, or to 80% of a shorter clip
    (generated test clips are often shorter than 4 s; the protocol would find no track at all in them)."""
    if min_track is None:
        min_track = min(MIN_TRACK, int(0.8 * len(frames)))
    dets = detect_all(frames, detector, progress)
    n_with = sum(1 for d in dets if len(d))
    tracks = build_tracks(dets, min_track=min_track, min_face_size=min_face_size)
    if not tracks:
        raise NoFaceError(
            f"no face track of more than {min_track} frames (faces found in {n_with}/{len(frames)} frames, "
            f"minimum face size {min_face_size:g} px)"
        )
    return tracks


# --- SyncNet crops --------------------------------------------------------------------------
def crop_track(
    frames: Sequence[np.ndarray], track: Track, crop_scale: float = CROP_SCALE, size: int = CROP_SIZE
) -> np.ndarray:
    """(T, 224, 224, 3) uint8 BGR crops of a track, cut as run_pipeline.py's `crop_video` cuts them."""
    s = np.maximum(track.boxes[:, 3] - track.boxes[:, 1], track.boxes[:, 2] - track.boxes[:, 0]) / 2
    cy = (track.boxes[:, 1] + track.boxes[:, 3]) / 2
    cx = (track.boxes[:, 0] + track.boxes[:, 2]) / 2
    k = SMOOTH_KERNEL if len(s) >= SMOOTH_KERNEL else (len(s) // 2) * 2 + 1 if len(s) > 1 else 1
    s, cx, cy = medfilt(s, k), medfilt(cx, k), medfilt(cy, k)
    out = np.empty((len(track), size, size, 3), np.uint8)
    for t, fidx in enumerate(track.frames):
        bs = s[t]
        bsi = int(bs * (1 + 2 * crop_scale))
        padded = np.pad(frames[int(fidx)], ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=PAD_VALUE)
        my, mx = cy[t] + bsi, cx[t] + bsi
        face = padded[
            int(my - bs) : int(my + bs * (1 + 2 * crop_scale)),
            int(mx - bs * (1 + crop_scale)) : int(mx + bs * (1 + crop_scale)),
        ]
        out[t] = cv2.resize(face, (size, size))
    return out


# --- landmarks ------------------------------------------------------------------------------
class LandmarkFitter:
    """dlib's 68-point shape predictor made robust to head roll and to another detector's box convention."""

    def __init__(self, predictor_path: str | Path | None = None):
        import dlib

        if predictor_path is None:
            predictor_path = dlib_model_dir() / "shape_predictor_68_face_landmarks.dat"
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(predictor_path))

    def _predict(self, gray: np.ndarray, centre: np.ndarray, width: float, angle: float) -> np.ndarray:
        """Landmarks of the face of `width` centred at `centre`, predicted in a copy rotated by `angle` degrees."""
        half = width / 2
        # Rotate only a window around the face, not the whole frame.
        r = int(math.ceil(width * 1.2))
        x0, y0 = int(centre[0]) - r, int(centre[1]) - r
        patch = _window(gray, x0, y0, 2 * r, 2 * r)
        c = np.array([centre[0] - x0, centre[1] - y0])
        m = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), angle, 1.0)
        rot = cv2.warpAffine(patch, m, (2 * r, 2 * r), flags=cv2.INTER_LINEAR) if angle else patch
        rect = self._dlib.rectangle(int(c[0] - half), int(c[1] - half), int(c[0] + half), int(c[1] + half))
        shape = self._predictor(rot, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        if angle:
            inv = cv2.invertAffineTransform(m)
            pts = pts @ inv[:, :2].T + inv[:, 2]
        return pts + np.array([x0, y0])

    def fit(self, gray: np.ndarray, box: Sequence[float], angle: float = 0.0) -> tuple[np.ndarray, float]:
        """(68, 2) landmarks and the face's roll in degrees, from a face box of any detector."""
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], dtype=np.float64)
        width = float(max(box[2] - box[0], box[3] - box[1]))
        pts = self._predict(gray, centre, width, angle)
        for _ in range(2):
            centre, width, angle = box_from_landmarks(pts)
            pts = self._predict(gray, centre, width, angle)
        return pts.astype(np.float32), roll_degrees(pts)


def _window(gray: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """gray[y0:y0+h, x0:x0+w] with zeros where the window leaves the frame."""
    out = np.zeros((h, w), gray.dtype)
    H, W = gray.shape
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if xb > xa and yb > ya:
        out[ya - y0 : yb - y0, xa - x0 : xb - x0] = gray[ya:yb, xa:xb]
    return out


def roll_degrees(lm: np.ndarray) -> float:
    """Head roll from the line between the eye centres; positive when the face's right side is lower in the image."""
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    return float(math.degrees(math.atan2(right[1] - left[1], right[0] - left[0])))


def box_from_landmarks(lm: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Centre, width and roll of the dlib-convention box these landmarks imply (upright in the rotated frame)."""
    mean = lm.mean(0)
    spread = float(np.sqrt(((lm - mean) ** 2).sum(1).mean()))
    angle = roll_degrees(lm)
    a = math.radians(angle)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = mean + rot @ (_BOX_CENTRE_OFFSET * spread)
    return centre, _BOX_WIDTH_PER_SPREAD * spread, angle


def track_landmarks(frames: Sequence[np.ndarray], track: Track, fitter: LandmarkFitter | None = None) -> np.ndarray:
    """(T, 68, 2) landmarks for every frame of a track."""
    fitter = fitter or LandmarkFitter()
    out = np.empty((len(track), 68, 2), np.float32)
    angle = 0.0
    for t, fidx in enumerate(track.frames):
        gray = cv2.cvtColor(np.ascontiguousarray(frames[int(fidx)]), cv2.COLOR_BGR2GRAY)
        out[t], angle = fitter.fit(gray, track.boxes[t], angle)
    return out
