"""The prepared avatar: what preparation produces, the cache stores and every renderer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from workbench.config import DetectorName, MaskSource, ParsingMode


@dataclass(frozen=True)
class PrepParams:
    """Every parameter that changes a prepared avatar; part of its cache key.

    The one source of the preparation defaults: the CLI, the tabs and the manifest read them from here
    (`PrepParams.extra_margin` is the default value), and the slider ranges from `PREP_RANGES`.
    """

    bbox_shift: int = 0
    extra_margin: int = 10  # v1.5: pixels added below the lowest landmark
    parsing_mode: ParsingMode = "jaw"
    left_cheek_width: int = 90
    right_cheek_width: int = 90
    detector: DetectorName = "dlib"
    mask_source: MaskSource = "auto"
    max_frames: int | None = None  # cap on frames taken from a long video

    def to_dict(self) -> dict:
        return asdict(self)


# Ranges the tabs offer, in pixels of the full frame (bbox_shift, extra_margin) or of the 256 crop (cheeks).
PREP_RANGES: dict[str, tuple[int, int]] = {
    "bbox_shift": (-40, 40),
    "extra_margin": (0, 40),
    "left_cheek_width": (20, 160),
    "right_cheek_width": (20, 160),
}


@dataclass
class Avatar:
    """A prepared avatar. Arrays are indexed by frame; every array has the same length N.

    Frames without a detected face borrow the box and landmarks of the nearest frame that has one
    (`has_face` says which), so frames, boxes and latents never drift apart.
    """

    avatar_id: str
    source: str  # file name the avatar came from, for display
    params: PrepParams
    fps: float
    frames: np.ndarray  # (N, H, W, 3) uint8 BGR, full frames
    boxes: np.ndarray  # (N, 4) int32 x1, y1, x2, y2: the face box the 256x256 crop is cut from
    landmarks: np.ndarray  # (N, 68, 2) float32, full-frame pixel coordinates
    has_face: np.ndarray  # (N,) bool
    crops: np.ndarray  # (N, 256, 256, 3) uint8 BGR, the face box resized with Lanczos
    masks: np.ndarray  # (N, 256, 256) uint8 0..255 blending mask in crop coordinates
    latents: np.ndarray | None = None  # (N, 8, 32, 32) float32: masked-lower-half latent ++ full latent
    bbox_range: tuple[int, int] = (0, 0)  # recommended bbox_shift range [-a, b] measured from landmarks
    mask_kind: str = "landmarks"  # which mask path made `masks`: "landmarks" or "bisenet"
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the full frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def loop_index(self, i: int) -> int:
        """Frame to show at output step i: forward then backward, so a loop never jumps."""
        n = len(self)
        if n == 1:
            return 0
        period = 2 * n - 2
        k = i % period
        return k if k < n else period - k


@dataclass
class Detections:
    """Stage 1's result for N frames: the detector's box and landmarks where it found a face, NaN elsewhere."""

    detector: str  # the detector's identity
    boxes: np.ndarray  # (N, 4) float64 detector boxes
    landmarks: np.ndarray  # (N, 68, 2) float32
    found: np.ndarray  # (N,) bool
    seconds: float = 0.0  # time the detector took

    def __len__(self) -> int:
        return int(self.found.shape[0])
