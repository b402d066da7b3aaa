"""Score one clip (frames + audio): face tracks once, then the weight-free sync metric and SyncNet on them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.config import FPS
from workbench.evaluation import protocol
from workbench.evaluation.errors import SyncNetWeightsMissing
from workbench.evaluation.face_track import (
    MIN_TRACK,
    BoxDetector,
    LandmarkFitter,
    Track,
    crop_track,
    get_box_detector,
    main_track,
    sfd_weights_path,
    track_landmarks,
    track_video,
)
from workbench.evaluation.landmark_sync import LandmarkSyncResult, landmark_sync, track_audio
from workbench.evaluation.syncnet import SyncNetScorer, SyncNetScores, syncnet_weights_path
from workbench.weights import sha256_cached

log = logging.getLogger(__name__)
# "protocol": syncnet_python's media steps (25 fps MPEG-4 + JPEG frames, scene split, XVID crop round trip, PCM
# re-extraction; see protocol.py), so LSE numbers compare with published ones. "raw": the decoded frames and audio
# scored directly, no lossy steps (LSE-D differs from the protocol's by a few tenths).
SYNCNET_MODES = ("protocol", "raw")
Progress = Callable[[float, str], None]


@dataclass
class ClipScores:
    landmark: LandmarkSyncResult | None = None
    syncnet: SyncNetScores | None = None
    syncnet_tracks: list[dict] = field(default_factory=list)  # per face track, as the protocol lists them
    track_frames: int = 0
    n_tracks: int = 0
    face_detector: str = ""
    notes: list[str] = field(default_factory=list)
    track: Track | None = None  # the main face track the weight-free scores read
    landmarks: np.ndarray | None = None  # (T, 68, 2) on that track's frames


class Scorers:
    """The detectors and models a process needs, loaded once and reused for every case it scores."""

    def __init__(
        self,
        models_dir: str | Path | None,
        device: str | None = None,
        face_detector: str = "auto",
        syncnet_mode: str = "protocol",
    ):
        if syncnet_mode not in SYNCNET_MODES:
            raise ValueError(f"unknown SyncNet mode {syncnet_mode!r}: choose {' or '.join(SYNCNET_MODES)}")
        self.syncnet_mode = syncnet_mode
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.device = device
        self.face_detector_choice = face_detector
        self._detector: BoxDetector | None = None
        self._fitter: LandmarkFitter | None = None
        self._syncnet: SyncNetScorer | None = None
        self.syncnet_missing: str | None = None
        self._syncnet_tried = False

    @property
    def detector(self) -> BoxDetector:
        if self._detector is None:
            self._detector = get_box_detector(self.models_dir, self.face_detector_choice, self.device)
        return self._detector

    @property
    def fitter(self) -> LandmarkFitter:
        if self._fitter is None:
            self._fitter = LandmarkFitter()
        return self._fitter

    @property
    def syncnet(self) -> SyncNetScorer | None:
        """The SyncNet scorer, or None (with `syncnet_missing` saying why) when its weights are absent."""
        if not self._syncnet_tried:
            self._syncnet_tried = True
            try:
                if self.models_dir is None:
                    raise SyncNetWeightsMissing("no models folder given: SyncNet weights cannot be found")
                self._syncnet = SyncNetScorer.from_models_dir(self.models_dir, self.device)
            except SyncNetWeightsMissing as e:
                self.syncnet_missing = str(e)
                log.warning("%s", e)
        return self._syncnet

    def weight_hashes(self) -> dict[str, str]:
        """sha256 of the evaluation's weight files, or 'none' for each that is absent."""
        out = {"syncnet_v2.model": "none", "sfd_face.pth": "none"}
        if self.models_dir is not None:
            try:
                out["syncnet_v2.model"] = sha256_cached(syncnet_weights_path(self.models_dir))
            except SyncNetWeightsMissing:
                pass
            sfd = sfd_weights_path(self.models_dir)
            if sfd is not None:
                out["sfd_face.pth"] = sha256_cached(sfd)
        return out


def score_clip(
    frames: Sequence[np.ndarray],
    audio16k: np.ndarray,
    scorers: Scorers,
    metrics: Sequence[str] = ("landmark_sync", "syncnet"),
    max_offset: int = 15,
    progress: Progress | None = None,
) -> ClipScores:
    """Face tracks of `frames`, then the requested sync metrics against `audio16k` (16 kHz mono, same start)."""
    out = ClipScores()
    want_ls, want_sn = "landmark_sync" in metrics, "syncnet" in metrics
    if not (want_ls or want_sn):
        return out
    syncnet = scorers.syncnet if want_sn else None
    if want_sn and syncnet is None:
        out.notes.append(scorers.syncnet_missing or "SyncNet unavailable")
    if not want_ls and syncnet is None:
        return out
    detector = scorers.detector
    out.face_detector = detector.name
    tracks = track_video(frames, detector, progress=_sub(progress, 0.0, 0.5, "face tracks"))
    out.n_tracks = len(tracks)
    main = main_track(tracks)
    out.track_frames = len(main)
    if want_ls:
        lm = track_landmarks(frames, main, scorers.fitter)
        out.track, out.landmarks = main, lm
        out.landmark = landmark_sync(lm, track_audio(audio16k, main.frames, FPS), max_offset=max_offset)
    if syncnet is not None and scorers.syncnet_mode == "protocol":
        if detector.name != "s3fd":
            out.notes.append("SyncNet crops come from dlib face tracks: sfd_face.pth (the protocol's S3FD) is absent")
        out.syncnet, out.syncnet_tracks = _protocol_syncnet(
            frames, audio16k, detector, syncnet, min(MIN_TRACK, int(0.8 * len(frames)))
        )
    elif syncnet is not None:
        if detector.name != "s3fd":
            out.notes.append("SyncNet crops come from dlib face tracks: sfd_face.pth (the protocol's S3FD) is absent")
        best: tuple[int, SyncNetScores] | None = None
        for k, t in enumerate(tracks):
            s = syncnet.score(
                crop_track(frames, t),
                track_audio(audio16k, t.frames, FPS),
                progress=_sub(progress, 0.5 + 0.5 * k / len(tracks), 0.5 / len(tracks), "SyncNet"),
            )
            out.syncnet_tracks.append({"first_frame": int(t.frames[0]), "frames": len(t), **s.to_dict()})
            if t is main:
                best = (k, s)
        out.syncnet = best[1] if best else None
    return out


def _protocol_syncnet(
    frames: Sequence[np.ndarray], audio16k: np.ndarray, detector: BoxDetector, syncnet: SyncNetScorer, min_track: int
) -> tuple[SyncNetScores | None, list[dict]]:
    """SyncNet through syncnet_python's media steps, from a lossless copy of these frames and audio."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="syncnet_clip_") as tmp:
        clip = protocol.write_clip(Path(tmp) / "clip.mkv", np.asarray(frames), audio16k, FPS)
        res = protocol.score_file(clip, detector, syncnet, min_track=min_track, work_dir=tmp)
    rows = [
        {"first_frame": int(t.frames[0]), "frames": len(t.frames), "mode": "protocol", **t.scores.to_dict()}
        for t in res.tracks
        if t.scores is not None
    ]
    main = res.main
    return (main.scores if main is not None else None), rows


def _sub(progress: Progress | None, start: float, span: float, label: str) -> Progress | None:
    if progress is None:
        return None
    return lambda f, msg="": progress(start + span * f, f"{label}: {msg}" if msg else label)
