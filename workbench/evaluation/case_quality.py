"""The quality and streaming scores of one case, from the face track `score_clip` already found.

A generated clip is judged against the source behind it: output frame j shows avatar frame
`avatar.loop_index(j)`, so the source frames, their landmarks (fitted by the same fitter in the output's own
face boxes: the head does not move between them), the face boxes and the blending masks line up frame by frame.
A real recording has no source: only its silence score and absolute values are kept.

Streaming vs file: the same audio through the renderer's streaming frontend (pushed in 40 ms chunks, as the
stream's worker pushes it after resampling) and through the file frontend the render used. Per frame, the two
conditions agree when they are equal to within `AGREE_RTOL`; the streamed frames are rendered on the same avatar
frames, their landmarks fitted in the same boxes, and the sync peak compared with the file path's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.avatars.model import Avatar
from workbench.config import FPS, SAMPLES_PER_FRAME
from workbench.evaluation.face_track import LandmarkFitter, Track, track_landmarks
from workbench.evaluation.landmark_sync import landmark_sync, track_audio
from workbench.evaluation.quality import SourceBehind, score_quality
from workbench.evaluation.scoring import ClipScores
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.loop import RenderLoop

AGREE_RTOL = 1e-3


def source_behind(avatar: Avatar, frames_len: int, track: Track, fitter: LandmarkFitter) -> SourceBehind:
    """The avatar frames behind output frames `track.frames`, landmarks fitted in the track's boxes."""
    bodies = [avatar.loop_index(int(j)) for j in range(frames_len)]
    src_all = [avatar.frames[b] for b in bodies]
    lm = track_landmarks(src_all, track, fitter)
    comp = Compositor(avatar)
    on_track = [bodies[int(j)] for j in track.frames]
    return SourceBehind(
        frames=[avatar.frames[b] for b in on_track],
        landmarks=lm,
        boxes=[avatar.boxes[b] for b in on_track],
        alphas=[comp.alpha(b) for b in on_track],
    )


def quality_fields(
    frames: Sequence[np.ndarray],
    audio16k: np.ndarray,
    scores: ClipScores,
    fitter: LandmarkFitter,
    avatar: Avatar | None,
    row: dict,
    details: dict,
) -> None:
    """Add the quality scores of the clip's main face track to `row` (and their workings to `details`)."""
    if scores.track is None or scores.landmarks is None:
        return
    track = scores.track
    source = source_behind(avatar, len(frames), track, fitter) if avatar is not None else None
    on_track = [frames[int(j)] for j in track.frames]
    q = score_quality(on_track, scores.landmarks, track_audio(audio16k, track.frames, FPS), source)
    row.update(q.row())
    details["quality"] = q.details


def _as_array(c) -> np.ndarray:
    return np.asarray(c.as_tuple() if hasattr(c, "as_tuple") else c, dtype=np.float64).reshape(-1)


def condition_agreement(streamed: Sequence, whole: Sequence) -> float:
    """Share of frames whose streamed condition equals the file path's (relative tolerance AGREE_RTOL)."""
    n = min(len(streamed), len(whole))
    if n == 0:
        return float("nan")
    agree = 0
    for s, w in zip(streamed[:n], whole[:n], strict=True):
        a, b = _as_array(s), _as_array(w)
        if a.shape == b.shape and np.linalg.norm(a - b) <= AGREE_RTOL * max(np.linalg.norm(b), 1e-6) + 1e-9:
            agree += 1
    # frames one path has and the other lacks disagree
    return agree / max(len(streamed), len(whole))


def stream_fields(
    engine,
    avatar: Avatar,
    audio16k: np.ndarray,
    renderer_name,
    scores: ClipScores,
    fitter: LandmarkFitter,
    row: dict,
    details: dict,
    max_offset: int = 15,
) -> None:
    """Render the same audio through the streaming frontend and compare with the file path."""
    renderer = engine.renderer_for(renderer_name)
    audio16k = np.asarray(audio16k, dtype=np.float32)
    whole = RenderLoop(renderer, avatar, lock=engine.render_lock, exact=True).conditions(audio16k, flush=True)
    stream = RenderLoop(renderer, avatar, lock=engine.render_lock, exact=False)
    streamed: list = []
    for off in range(0, len(audio16k), SAMPLES_PER_FRAME):
        streamed += stream.conditions(audio16k[off : off + SAMPLES_PER_FRAME])
    streamed += stream.conditions(None, flush=True)
    agreement = condition_agreement(streamed, whole)
    row["stream_agreement"] = agreement
    d: dict = {"frames_streamed": len(streamed), "frames_file": len(whole)}
    if scores.track is not None and scores.landmark is not None:
        track = scores.track
        n = len(streamed)
        keep = track.frames[track.frames < n]
        if len(keep) >= 2 * max_offset + 2:
            frames: dict[int, np.ndarray] = {}
            batch = 16
            for k in range(0, len(keep), batch):
                js = [int(j) for j in keep[k : k + batch]]
                frames.update(zip(js, stream.render(js, [streamed[j] for j in js]), strict=True))
            sub = Track(frames=np.asarray(keep), boxes=track.boxes[: len(keep)])
            lm = track_landmarks(frames, sub, fitter)
            ls = landmark_sync(lm, track_audio(audio16k, keep, FPS), max_offset=max_offset)
            row["stream_peak_drop"] = float(scores.landmark.peak - ls.peak)
            d.update(stream_peak=ls.peak, stream_offset=ls.offset, file_peak=scores.landmark.peak)
    details["stream"] = d
