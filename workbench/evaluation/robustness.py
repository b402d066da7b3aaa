"""How often the weight-free metric finds the true offset on real talking clips: the README's robustness table.

A trial is one window of a clip's face track, scored against the clip's own audio shifted by a known number of
frames (0 for the in-sync case). It is a hit when the metric's offset is within ±1 frame of the injected shift.
Windows of one clip overlap and share a speaker, so they are trials, not independent clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workbench.config import FPS, SAMPLES_PER_FRAME
from workbench.evaluation.face_track import (
    BoxDetector,
    LandmarkFitter,
    get_box_detector,
    main_track,
    track_landmarks,
    track_video,
)
from workbench.evaluation.landmark_sync import METHODS, landmark_sync, shift_audio, track_audio
from workbench.media import load_audio, read_video

DEFAULT_SHIFTS = (-10, -5, -2, 0, 2, 5, 10)
DEFAULT_WINDOWS = (40, 50, 75, 100, 0)  # frames; 0 = the whole track


@dataclass
class ClipLandmarks:
    name: str
    landmarks: np.ndarray  # (T, 68, 2) over the main face track
    audio16k: np.ndarray  # audio covering exactly those frames
    first_frame: int


def clip_landmarks(
    video: str | Path,
    audio: str | Path | None = None,
    detector: BoxDetector | None = None,
    fitter: LandmarkFitter | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ClipLandmarks:
    """Landmarks of the main face track of a clip and the audio under it (the clip's own track by default)."""
    frames, _ = read_video(video)
    audio16k = load_audio(audio if audio is not None else video)
    track = main_track(track_video(frames, detector or get_box_detector(None), progress=progress))
    lm = track_landmarks(frames, track, fitter)
    return ClipLandmarks(Path(video).stem, lm, track_audio(audio16k, track.frames), int(track.frames[0]))


def trials(
    clip: ClipLandmarks,
    windows: Sequence[int] = DEFAULT_WINDOWS,
    shifts: Sequence[int] = DEFAULT_SHIFTS,
    methods: Sequence[str] = METHODS,
    step: int | None = None,
) -> pd.DataFrame:
    """One row per (window length, window start, shift, method) with the offset found and whether it hit."""
    n = min(len(clip.landmarks), len(clip.audio16k) // SAMPLES_PER_FRAME)
    rows = []
    shifted = {s: shift_audio(clip.audio16k, s) for s in shifts}
    for w in windows:
        w = n if w in (0, None) or w >= n else int(w)
        hop = step or max(4, w // 6)
        for start in range(0, n - w + 1, hop):
            lm = clip.landmarks[start : start + w]
            for s in shifts:
                audio = shifted[s][start * SAMPLES_PER_FRAME : (start + w) * SAMPLES_PER_FRAME]
                for m in methods:
                    r = landmark_sync(lm, audio, method=m)
                    rows.append(
                        {
                            "clip": clip.name,
                            "window": w,
                            "start": start,
                            "shift": s,
                            "method": m,
                            "found": r.offset,
                            "confidence": r.confidence,
                            "hit": abs(r.offset - s) <= 1,
                        }
                    )
    return pd.DataFrame(rows)


def hit_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Hit rate per method and window length: in-sync (shift 0), each |shift|, and all trials."""
    out = []
    for (method, window), g in df.groupby(["method", "window"], sort=False):
        row = {
            "method": method,
            "window_frames": int(window),
            "window_s": round(window / FPS, 1),
            "windows": int(g["start"].nunique()),
        }
        for a in sorted(g["shift"].abs().unique()):
            row["offset 0" if a == 0 else f"shift ±{a}"] = float(g[g["shift"].abs() == a]["hit"].mean())
        row["all"] = float(g["hit"].mean())
        out.append(row)
    return pd.DataFrame(out)


def improvement(rates: pd.DataFrame, ours: str = "fused", baseline: str = "delta") -> pd.DataFrame:
    """Our hit rate minus the baseline's over all trials, per window length, in percentage points."""
    a = rates[rates.method == ours].set_index("window_frames")["all"]
    b = rates[rates.method == baseline].set_index("window_frames")["all"]
    return pd.DataFrame(
        {
            "window_frames": a.index,
            ours: a.values,
            baseline: b.reindex(a.index).values,
            "points": ((a - b.reindex(a.index)) * 100).round(1).values,
        }
    )
