"""The prepared avatar: what preparation produces, the cache stores and every renderer reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from workbench.config import DetectorName, MaskSource, ParsingMode

# Which preparation parameters act for which weights, as the reference (TMElyralab/MuseTalk
# scripts/realtime_inference.py and inference.py) applies them:
# - v1.5 was trained on fixed crops: bbox_shift is forced to 0; it is tuned with extra_margin, the parsing
#   mode and the cheek widths.
# - v1.0's knob is bbox_shift; extra_margin is not added and its mask is always parsed in "raw" mode, so
#   the cheek widths (a "jaw" mode setting) do nothing either.
# - None (no MuseTalk weights: the CPU renderer): every parameter acts as given.
SHAPE_PARAMS = ("bbox_shift", "extra_margin", "parsing_mode", "left_cheek_width", "right_cheek_width")
ACTING_PARAMS: dict[str | None, tuple[str, ...]] = {
    "v15": ("extra_margin", "parsing_mode", "left_cheek_width", "right_cheek_width"),
    "v1": ("bbox_shift",),
    None: SHAPE_PARAMS,
}


def acting_params(version: str | None, force_bbox_shift: bool = False) -> tuple[str, ...]:
    """The face-shape parameters that change the avatar for weights of `version` ("v15", "v1" or None)."""
    if version not in ACTING_PARAMS:
        raise ValueError(f"unknown MuseTalk version {version!r}; expected one of v15, v1 or None")
    acting = ACTING_PARAMS[version]
    if version == "v15" and force_bbox_shift:
        acting = ("bbox_shift", *acting)
    return acting


def describe_acting(version: str | None) -> str:
    """One line for the UI and CLI: which parameters act for the loaded weights and which are ignored."""
    acting = acting_params(version)
    ignored = [p for p in SHAPE_PARAMS if p not in acting]
    name = {"v15": "MuseTalk v1.5", "v1": "MuseTalk v1.0", None: "the CPU renderer"}[version]
    text = f"For {name} weights: {', '.join(acting)} act"
    if ignored:
        text += f"; {', '.join(ignored)} are ignored as in the reference"
    if version == "v15":
        text += " (force a bbox_shift as an explicit experiment with force_bbox_shift)"
    if version == "v1":
        text += " (its mask is parsed in raw mode)"
    return text + "."


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
    model_version: str | None = None  # the MuseTalk weights it is for ("v15"/"v1"), None for the CPU renderer
    force_bbox_shift: bool = False  # v1.5 experiment: apply bbox_shift although the reference forces 0

    def to_dict(self) -> dict:
        return asdict(self)

    def effective(self) -> PrepParams:
        """The parameters as they act for `model_version` (see ACTING_PARAMS): what preparation uses."""
        acting = acting_params(self.model_version, self.force_bbox_shift)
        p = self
        if "bbox_shift" not in acting:
            p = replace(p, bbox_shift=0)
        if "extra_margin" not in acting:
            p = replace(p, extra_margin=0)
        if self.model_version == "v1":
            p = replace(p, parsing_mode="raw")
        return p


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
        """Frame to show at output step i: MuseTalk's cycle `frames + frames[::-1]` (period 2n, both ends shown
        twice), so a loop never jumps and output step i uses the avatar frame the reference uses."""
        n = len(self)
        k = i % (2 * n)
        return k if k < n else 2 * n - 1 - k


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
