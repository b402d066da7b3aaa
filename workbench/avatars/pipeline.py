"""Avatar preparation: source media → frames, face boxes, 256x256 crops, blending masks, VAE latents.

Two stages, so the expensive one runs once per source:
1. `detect_faces` — the detector on every frame (box + 68 landmarks). Depends only on the frames and the detector.
2. `build_avatar` — everything that depends on `PrepParams` (bbox_shift, extra_margin, parsing mode, cheek
   widths): boxes, crops, masks and latents. Cheap, except the optional VAE encoding.
`prepare_avatar` is the one pipeline: it runs both, and with a store (`workbench.avatars.store`) it loads
what is already prepared and keeps stage 1's `Detections` so a new bbox_shift detects nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from workbench.avatars.masks import make_masks, resolve_mask_kind
from workbench.avatars.model import Avatar, Detections, PrepParams
from workbench.avatars.photo_motion import animate_still, loop_length
from workbench.avatars.store import AvatarCache
from workbench.config import CROP_SIZE, FPS, LATENT_SIZE, N_LANDMARKS
from workbench.faces.boxes import bbox_range, face_box
from workbench.faces.landmarks import LandmarkDetector
from workbench.media import estimate_prepare_bytes, read_frames, source_digest

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
VaeEncoder = Callable[[np.ndarray], np.ndarray]  # (B, 256, 256, 3) uint8 BGR → (B, 8, 32, 32) float32
LATENT_CHANNELS = 8  # masked-lower-half latent (4) ++ full-crop latent (4)
DETECT_SHARE = 0.7  # of the progress bar; detection is the slow part without a VAE


class NoFaceError(ValueError):
    """No face was found in any frame of the source."""


class PreparationError(ValueError):
    """The source cannot be made into an avatar (bad shapes, a broken encoder output)."""


def _scaled(progress: Progress | None, lo: float, hi: float) -> Progress | None:
    if progress is None:
        return None
    return lambda f, msg: progress(lo + (hi - lo) * float(f), msg)


def source_name(source: str | Path | np.ndarray) -> str:
    return "array" if isinstance(source, np.ndarray) else Path(source).name


def load_source(
    source: str | Path | np.ndarray, max_frames: int | None = None, max_side: int | None = None
) -> tuple[np.ndarray, float]:
    """Frames (N, H, W, 3) uint8 BGR and fps of a video, photo, frames folder or an array of frames; files
    are downscaled while decoding so their longer side is at most `max_side` pixels."""
    if isinstance(source, np.ndarray):
        frames = source[None] if source.ndim == 3 else source
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise PreparationError(f"frames must be (N, H, W, 3) uint8 BGR, got {source.shape} {source.dtype}")
        if max_frames is not None:
            frames = frames[:max_frames]
        return np.ascontiguousarray(frames), float(FPS)
    return read_frames(source, max_frames, max_side)


def detect_faces(frames: np.ndarray, detector: LandmarkDetector, progress: Progress | None = None) -> Detections:
    """Stage 1: the detector on every frame."""
    n = len(frames)
    boxes = np.full((n, 4), np.nan, dtype=np.float64)
    landmarks = np.full((n, N_LANDMARKS, 2), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    t0 = time.perf_counter()
    for i, det in enumerate(detector.detect_many(frames, progress)):
        if det is not None:
            boxes[i], landmarks[i], found[i] = det.box, det.landmarks, True
    seconds = time.perf_counter() - t0
    log.info("%s found faces in %d/%d frames in %.1f s", detector.identity, found.sum(), n, seconds)
    return Detections(detector.identity, boxes, landmarks, found, seconds)


def fill_missing(det: Detections, what: str = "the source") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes, landmarks and has_face for every frame: a frame without a face borrows the nearest frame's
    (the earlier one on a tie), so frames, boxes and latents stay in step."""
    found = np.asarray(det.found, dtype=bool)
    if not found.any():
        raise NoFaceError(
            f"no face found in any of the {len(found)} frame(s) of {what}; "
            "use a clip where one face is clearly visible and facing the camera"
        )
    idx = np.flatnonzero(found)
    t = np.arange(len(found))
    pos = np.searchsorted(idx, t)
    before = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    after = idx[np.clip(pos, 0, len(idx) - 1)]
    nearest = np.where(np.abs(t - before) <= np.abs(after - t), before, after)
    return det.boxes[nearest].copy(), det.landmarks[nearest].copy(), found.copy()


def crop_faces(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, 256, 256, 3) crops: each face box resized with Lanczos, as MuseTalk does."""
    crops = np.empty((len(frames), CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=np.int64)):
        crops[i] = cv2.resize(frames[i][y1:y2, x1:x2], (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LANCZOS4)
    return crops


def encode_latents(
    crops: np.ndarray,
    vae_encoder: VaeEncoder,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> np.ndarray:
    """The VAE latents of every crop, `batch_size` crops per encoder call."""
    n = len(crops)
    out = np.empty((n, LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE), dtype=np.float32)
    for b in range(0, n, batch_size):
        z = np.asarray(vae_encoder(crops[b : b + batch_size]), dtype=np.float32)
        want = (min(batch_size, n - b), LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE)
        if z.shape != want:
            raise PreparationError(f"the VAE encoder returned {z.shape} for {want[0]} crops; expected {want}")
        out[b : b + batch_size] = z
        if progress is not None:
            progress(min(n, b + batch_size) / n, f"encoding latents {min(n, b + batch_size)}/{n}")
    return out


def params_digest(params: PrepParams, *identities: str | None) -> str:
    """sha256 of the parameters and the identities of the models that shape the avatar."""
    blob = json.dumps({"params": params.to_dict(), "models": [i for i in identities]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def model_identity(obj: object | None) -> str | None:
    """A component's cache identity: its `identity`/`cache_key` attribute (for a bound method such as
    `renderer.encode_crops`, its owner's, plus the method name), else its qualified name."""
    if obj is None:
        return None
    owner = getattr(obj, "__self__", None)
    if owner is not None and not isinstance(owner, type):
        inner = (
            model_identity(owner)
            if any(isinstance(getattr(owner, a, None), str) for a in ("identity", "cache_key"))
            else None
        )
        if inner is not None:
            return f"{inner}.{getattr(obj, '__name__', 'call')}"
    for attr in ("identity", "cache_key"):
        v = getattr(obj, attr, None)
        if isinstance(v, str) and v:
            return v
    module = getattr(obj, "__module__", None) or type(obj).__module__
    return f"{module}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def avatar_id_for(
    digest: str,
    params: PrepParams,
    detector: LandmarkDetector,
    vae_encoder: VaeEncoder | None = None,
    face_parser: object | None = None,
) -> str:
    """The avatar id: content hash of the source + hash of the parameters and model identities."""
    parser_id = model_identity(face_parser) if resolve_mask_kind(params.mask_source, face_parser) == "bisenet" else None
    p = params_digest(params, model_identity(detector), model_identity(vae_encoder), parser_id)
    return f"{digest[:16]}-{p[:12]}"


def build_avatar(
    frames: np.ndarray,
    fps: float,
    detections: Detections,
    params: PrepParams,
    *,
    avatar_id: str,
    source: str,
    vae_encoder: VaeEncoder | None = None,
    face_parser: object | None = None,
    progress: Progress | None = None,
    vae_batch_size: int = 8,
) -> Avatar:
    """Stage 2: boxes, crops, masks and latents for `params` from stage 1's detections."""
    if len(detections) != len(frames):
        raise PreparationError(f"{len(detections)} detections for {len(frames)} frames")
    mask_kind = resolve_mask_kind(params.mask_source, face_parser)
    det_boxes, landmarks, has_face = fill_missing(detections, source)
    shape = frames.shape[1:3]
    acting = params.effective()  # v1.5 ignores bbox_shift, v1.0 extra_margin, as the reference does
    boxes = np.stack(
        [
            face_box(lm, shape, acting.bbox_shift, acting.extra_margin, db)
            for lm, db in zip(landmarks, det_boxes, strict=True)
        ]
    )
    crops = crop_faces(frames, boxes)
    has_vae = vae_encoder is not None
    masks = make_masks(
        frames,
        boxes,
        landmarks,
        acting.parsing_mode,
        acting.left_cheek_width,
        acting.right_cheek_width,
        face_parser if mask_kind == "bisenet" else None,
        _scaled(progress, 0.0, 0.3 if has_vae else 1.0),
    )
    latents = None
    if has_vae:
        latents = encode_latents(crops, vae_encoder, vae_batch_size, _scaled(progress, 0.3, 1.0))
    return Avatar(
        avatar_id=avatar_id,
        source=source,
        params=params,
        fps=float(fps),
        frames=frames,
        boxes=boxes,
        landmarks=landmarks.astype(np.float32),
        has_face=has_face,
        crops=crops,
        masks=masks,
        latents=latents,
        bbox_range=bbox_range(landmarks, has_face),
        mask_kind=mask_kind,
        extras={"detector": detections.detector, "n_detected": int(has_face.sum())},
    )


def check_memory(source: str | Path, est: dict, limit_bytes: int) -> dict:
    """Refuse, with the numbers, a preparation whose estimate (`estimate_prepare_bytes`) is over `limit_bytes`."""
    if est["bytes"] > limit_bytes:
        fits = max(1, int(limit_bytes / max(1, est["bytes"] / max(1, est["frames"]))))
        raise PreparationError(
            f"preparing {Path(source).name} would need about {est['bytes'] / 2**30:.1f} GB of memory "
            f"({est['frames']} frames of {est['width']}x{est['height']}); the limit is {limit_bytes / 2**30:.1f} GB "
            f"(WORKBENCH_PREPARE_MEMORY_GB). Take at most about {fits} frames (max_frames) or a shorter or smaller clip."
        )
    return est


def _animated_photo(frame: np.ndarray, det: Detections) -> tuple[np.ndarray, Detections]:
    n = loop_length(frame.shape)
    frames, boxes, lms = animate_still(frame, det.boxes[0], det.landmarks[0], n)
    moved = Detections(
        detector=det.detector,
        boxes=boxes,
        landmarks=lms.astype(np.float32),
        found=np.ones(n, bool),
        seconds=det.seconds,
    )
    return frames, moved


def prepare_avatar(
    source: str | Path | np.ndarray,
    params: PrepParams,
    detector: LandmarkDetector,
    vae_encoder: VaeEncoder | None = None,
    face_parser: object | None = None,
    progress: Progress | None = None,
    detections: Detections | None = None,
    *,
    store: AvatarCache | None = None,
    vae_batch_size: int = 8,
    owner: str | None = None,
    name: str | None = None,
    save: bool = True,
    reuse: bool = True,
    max_side: int | None = None,
    memory_limit_bytes: int | None = None,
) -> Avatar:
    """Prepare an avatar from a video, a photo, a folder of frames or an (N, H, W, 3) array.

    The one preparation pipeline. With a `store`, an avatar already prepared with the same source, parameters
    and models is loaded instead, the source's detections are reused when only `params` changed, and the
    result is saved. Pass `detections` from an earlier run on the same source and detector to skip detection.
    Raises NoFaceError when no frame has a face, MediaError for unreadable media.

    A file whose longer side is over `max_side` is downscaled while decoding (the avatar's and detections' keys
    then name the working size); one whose estimated memory is over `memory_limit_bytes` is refused before it is
    decoded. `owner` and `name` (default: the file's stem, made unique in the store) are recorded when the avatar
    is created here: a cache hit stays whoever made it. `save=False` (previews) leaves the store without a new
    avatar (detections are still kept). `reuse=False` prepares from the source even when the store holds this
    avatar: a stored avatar's frames are a JPEG round trip, so an evaluation that reused one would score
    differently depending on what the app had cached before.
    """
    t0 = time.perf_counter()
    report = progress or (lambda f, m: None)
    digest = store.digest(source) if store is not None else source_digest(source)
    keyed = digest
    est = None
    if not isinstance(source, np.ndarray) and (max_side or memory_limit_bytes):
        est = estimate_prepare_bytes(source, params.max_frames, max_side)
        if est["downscaled"]:
            keyed = hashlib.sha256(f"{digest}|{est['width']}x{est['height']}".encode()).hexdigest()
    avatar_id = avatar_id_for(keyed, params, detector, vae_encoder, face_parser)
    if reuse and store is not None and store.has(avatar_id):
        report(1.0, "loaded from cache")
        return store.load(avatar_id)
    if memory_limit_bytes is not None and est is not None:
        check_memory(source, est, memory_limit_bytes)
    report(0.0, "reading frames")
    frames, fps = load_source(source, params.max_frames, max_side)
    source_label = source_name(source)
    if detections is None and store is not None:
        key = store.detection_key(keyed, detector, params.max_frames)
        cached = store.load_detections(key)
        if cached is not None and len(cached) == len(frames):
            detections = cached
    if detections is None:
        detections = detect_faces(frames, detector, _scaled(progress, 0.02, DETECT_SHARE))
        if store is not None:
            store.save_detections(store.detection_key(keyed, detector, params.max_frames), detections, source_label)
    if len(frames) == 1 and bool(detections.found[0]) and loop_length(frames[0].shape):
        # A photo: a short loop of small head sway and blinks, so the idle face is not frozen (photo_motion.py).
        frames, detections = _animated_photo(frames[0], detections)
    avatar = build_avatar(
        frames,
        fps,
        detections,
        params,
        avatar_id=avatar_id,
        source=source_label,
        vae_encoder=vae_encoder,
        face_parser=face_parser,
        progress=_scaled(progress, DETECT_SHARE, 0.97),
        vae_batch_size=vae_batch_size,
    )
    avatar.extras["source_digest"] = digest
    avatar.extras["owner"] = owner
    wanted = name or (Path(source).stem if isinstance(source, str | Path) else "avatar")
    avatar.extras["name"] = store.unique_name(wanted, avatar_id) if store is not None else wanted
    avatar.extras["prepare_seconds"] = time.perf_counter() - t0
    avatar.extras["detect_seconds"] = detections.seconds
    if store is not None and save:
        report(0.97, "saving")
        store.save(avatar)
        # Show the frames as stored (JPEG-packed, decoded on access): a fresh avatar then renders exactly as it
        # will after a reload, and the decoded frames are not all held in memory.
        avatar.frames = store.stored_frames(avatar.avatar_id, avatar.frame_size)
    report(1.0, f"prepared {len(avatar)} frames")
    return avatar
