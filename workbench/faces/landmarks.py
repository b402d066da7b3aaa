"""Face box and the 68 face landmarks of one frame.

Two detectors share one contract (`LandmarkDetector.detect`):
- "dlib" (default, weight-free here): dlib's HOG face detector and its 68-point shape predictor, the
  model files shipped inside the `face-recognition-models` package.
- "dwpose": MuseTalk's own choice, S3FD face boxes + DWPose whole-body landmarks 23:91, which follow the
  same 68-point scheme (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67). Needs the official weights.
"""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from workbench.config import N_LANDMARKS, DetectorName
from workbench.weights import MissingWeightsError, PackagedModelMissingError, sha256_cached

log = logging.getLogger(__name__)

# Where the official files live under models/ (MuseTalk's download layout, and syncnet_python's S3FD).
DWPOSE_FILE = Path("dwpose") / "dw-ll_ucoco_384.pth"
S3FD_FILES = (
    Path("s3fd") / "s3fd-619a316812.pth",
    Path("face_detection") / "s3fd.pth",
    Path("syncnet_eval") / "sfd_face.pth",
)


@dataclass(frozen=True)
class Detection:
    """One face: the detector's box (4,) float x1, y1, x2, y2 and landmarks (68, 2) float32, full-frame pixels."""

    box: np.ndarray
    landmarks: np.ndarray
    score: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", np.asarray(self.box, dtype=np.float64).reshape(4))
        object.__setattr__(self, "landmarks", np.asarray(self.landmarks, dtype=np.float32).reshape(N_LANDMARKS, 2))


class LandmarkDetector(ABC):
    """Finds the main face of a BGR frame; None when there is none."""

    name: str = "base"

    @abstractmethod
    def detect(self, frame_bgr: np.ndarray) -> Detection | None: ...

    @property
    def identity(self) -> str:
        """What makes this detector's output what it is; part of every cache key built on detections."""
        return self.name

    def detect_many(
        self,
        frames: Sequence[np.ndarray],
        progress: Callable[[float, str], None] | None = None,
    ) -> list[Detection | None]:
        out: list[Detection | None] = []
        n = len(frames)
        for i, frame in enumerate(frames):
            out.append(self.detect(frame))
            if progress is not None and (i % 10 == 0 or i == n - 1):
                progress((i + 1) / n, f"detecting faces {i + 1}/{n}")
        return out


def missing_weights(paths: Sequence[Path | str], component: str, models_dir: Path | None = None) -> Exception:
    """The project's MissingWeightsError (workbench/weights.py) for official files that are absent."""
    return MissingWeightsError(list(paths), [component], models_dir)


def _dlib_files_missing(message: str) -> Exception:
    # dlib's files come with a PyPI package, not with `workbench weights download`.
    return PackagedModelMissingError(message)


# --- dlib ---------------------------------------------------------------------------------
def dlib_model_dir() -> Path:
    """The `models/` folder of the face-recognition-models package, found without importing it
    (its __init__ imports pkg_resources, which new setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise _dlib_files_missing(
            "dlib's face models are missing: pip install face-recognition-models (it ships the 68-point predictor)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibDetector(LandmarkDetector):
    """dlib HOG (or CNN) face detector + 68-point shape predictor.

    HOG runs on a copy scaled so its long side is at most `detect_side` (a 704x1216 frame takes 37 ms
    instead of 163 ms, with the same face); the predictor then runs at full resolution inside the
    detector box scaled back. When the scaled pass finds nothing it retries with one upsampling,
    which catches faces too small for the plain pass.
    """

    name = "dlib"

    def __init__(self, model: str = "hog", detect_side: int = 640, model_dir: Path | None = None):
        import dlib

        if model not in ("hog", "cnn"):
            raise ValueError(f"dlib model must be 'hog' or 'cnn', got {model!r}")
        d = Path(model_dir) if model_dir is not None else dlib_model_dir()
        self.predictor_path = d / "shape_predictor_68_face_landmarks.dat"
        self.cnn_path = d / "mmod_human_face_detector.dat"
        needed = [self.predictor_path] + ([self.cnn_path] if model == "cnn" else [])
        for p in needed:
            if not p.is_file():
                raise _dlib_files_missing(f"dlib model file not found: {p} (reinstall face-recognition-models)")
        self.model = model
        self.detect_side = int(detect_side)
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(self.predictor_path))
        self._hog = dlib.get_frontal_face_detector() if model == "hog" else None
        self._cnn = dlib.cnn_face_detection_model_v1(str(self.cnn_path)) if model == "cnn" else None

    @property
    def identity(self) -> str:
        return f"dlib-{self.model}-{self.detect_side}-{sha256_cached(self.predictor_path)[:12]}"

    def _faces(self, gray: np.ndarray, upsample: int) -> list[tuple[float, float, float, float, float]]:
        if self._hog is not None:
            rects, scores, _ = self._hog.run(gray, upsample, 0.0)
            return [(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores, strict=True)]
        rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        return [
            (m.rect.left(), m.rect.top(), m.rect.right(), m.rect.bottom(), float(m.confidence))
            for m in self._cnn(rgb, upsample)
        ]

    def detect(self, frame_bgr: np.ndarray) -> Detection | None:
        gray = cv2.cvtColor(np.ascontiguousarray(frame_bgr), cv2.COLOR_BGR2GRAY)
        h, w = gray.shape
        scale = min(1.0, self.detect_side / max(h, w))
        small = (
            cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
        )
        faces = self._faces(small, 0) or self._faces(small, 1)
        if not faces:
            return None
        # A talking-head source has one main face: the largest.
        x1, y1, x2, y2, score = max(faces, key=lambda f: (f[2] - f[0]) * (f[3] - f[1]))
        box = np.array([x1, y1, x2, y2], dtype=np.float64) / scale
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(gray, rect)
        lm = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
        return Detection(box=box, landmarks=lm, score=score)


# --- DWPose + S3FD (MuseTalk's detectors) -------------------------------------------------
class DWPoseDetector68(LandmarkDetector):
    """S3FD decides whether there is a face and gives its box (the highest score, as MuseTalk takes the
    first); DWPose gives the 68 landmarks (whole-body keypoints 23:91)."""

    name = "dwpose"

    def __init__(self, face_detector, pose, identity: str):
        self.face_detector = face_detector
        self.pose = pose
        self._identity = identity

    @classmethod
    def from_models_dir(cls, models_dir: str | Path, device: str | None = None) -> DWPoseDetector68:
        models_dir = Path(models_dir)
        dw = models_dir / DWPOSE_FILE
        s3 = next((models_dir / p for p in S3FD_FILES if (models_dir / p).is_file()), None)
        if not dw.is_file():
            raise missing_weights([dw], "dwpose", models_dir)
        if s3 is None:
            raise missing_weights([models_dir / S3FD_FILES[-1]], "syncnet_eval", models_dir)
        # lazy: both import torch, which only this detector needs
        from workbench.faces.dwpose import DWPoseDetector
        from workbench.faces.s3fd import S3FD

        ident = f"dwpose-{sha256_cached(dw)[:12]}-s3fd-{sha256_cached(s3)[:12]}"
        return cls(S3FD.from_file(s3, device), DWPoseDetector.from_file(dw, device), ident)

    @property
    def identity(self) -> str:
        return self._identity

    def detect(self, frame_bgr: np.ndarray) -> Detection | None:
        dets = np.asarray(self.face_detector.detect(frame_bgr))
        if dets.size == 0:
            return None
        best = dets[int(np.argmax(dets[:, 4]))]
        box = np.clip(best[:4].astype(np.float64), 0, None)
        # MuseTalk runs DWPose on the whole frame (mmpose's inference_topdown without boxes); the S3FD box
        # only says a face is there and is the fallback when the landmark box degenerates.
        lm = np.asarray(self.pose.landmarks68(frame_bgr, None), dtype=np.float32)
        return Detection(box=box, landmarks=lm, score=float(best[4]))


def get_detector(
    name: DetectorName = "dlib", models_dir: str | Path | None = None, device: str | None = None
) -> LandmarkDetector:
    """The detector called `name`; "dwpose" needs MuseTalk's official weights under `models_dir`."""
    if name == "dlib":
        return DlibDetector()
    if name == "dwpose":
        if models_dir is None:
            raise ValueError("the dwpose detector needs the models_dir that holds dwpose/ and the S3FD weights")
        return DWPoseDetector68.from_models_dir(models_dir, device)
    raise ValueError(f"unknown detector {name!r}: choose 'dlib' or 'dwpose'")
