"""Latency from per-frame stage timestamps (`workbench.timing.FrameTiming`): a file render's or a live session's.

Stages, each the time between two consecutive timestamps of a frame:
features = features_ready - audio_in, render = rendered - features_ready, composite = composited - rendered,
send = sent - composited; total = the frame's last timestamp - audio_in.

- first-frame latency: from the first frame's audio arriving to that frame's last timestamp;
- sustained fps: output frames per second between the first and the last output (a batch shares one time);
- real-time factor: wall time from the first audio to the last output over the media duration (frames / fps);
  below 1 is faster than real time;
- dropped frames: frame numbers missing from the sequence;
- late frames: frames output after their playout slot, the slot of frame k being the first output time plus
  (k - first) / fps plus one frame of slack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.config import FPS
from workbench.timing import STAGES, FrameTiming, read_latency_log

STAGE_NAMES = ("features", "render", "composite", "send")
PERCENTILES = (50, 95, 99)


@dataclass
class LatencyStats:
    n_frames: int
    n_idle: int
    first_frame_ms: float | None
    sustained_fps: float | None
    rtf: float | None
    dropped: int
    late: int
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # stage -> {"p50": ms, "p95": …, "p99": …}
    total_ms: list[float] = field(default_factory=list, repr=False)  # per-frame total latency, for the CDF
    stage_ms: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def flat(self, prefix: str = "latency_") -> dict[str, float | int | None]:
        """One level of metric names for the per-case table."""
        out: dict[str, float | int | None] = {
            f"{prefix}first_frame_ms": self.first_frame_ms,
            f"{prefix}sustained_fps": self.sustained_fps,
            f"{prefix}rtf": self.rtf,
            f"{prefix}dropped": self.dropped,
            f"{prefix}late": self.late,
            f"{prefix}frames": self.n_frames,
        }
        for stage, ps in self.stages.items():
            for p, v in ps.items():
                out[f"{prefix}{stage}_{p}_ms"] = v
        return out

    def to_dict(self) -> dict:
        return {
            "n_frames": self.n_frames,
            "n_idle": self.n_idle,
            "first_frame_ms": self.first_frame_ms,
            "sustained_fps": self.sustained_fps,
            "rtf": self.rtf,
            "dropped": self.dropped,
            "late": self.late,
            "stages": self.stages,
            "total_ms": self.total_ms,
            "stage_ms": self.stage_ms,
        }


def _last_time(t: FrameTiming) -> float | None:
    for name in reversed(STAGES):
        v = getattr(t, name)
        if v is not None:
            return float(v)
    return None


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}


def latency_stats(timings: Sequence[FrameTiming], fps: float = FPS, slack_frames: float = 1.0) -> LatencyStats:
    """Statistics of one stream of frames; idle-loop frames count for fps and lateness, not for stage latency."""
    if not timings:
        raise ValueError("no frame timings to measure")
    ts = sorted(timings, key=lambda t: t.frame)
    frames = np.array([t.frame for t in ts])
    expected = int(frames[-1] - frames[0] + 1)
    dropped = expected - len(np.unique(frames))
    outs = [(_last_time(t), t) for t in ts]
    outs = [(o, t) for o, t in outs if o is not None]
    speech = [t for t in ts if not t.idle]

    stage_ms: dict[str, list[float]] = {s: [] for s in STAGE_NAMES}
    total_ms: list[float] = []
    pairs = list(zip(STAGES[:-1], STAGES[1:], strict=True))
    for t in speech:
        for name, (a, b) in zip(STAGE_NAMES, pairs, strict=True):
            va, vb = getattr(t, a), getattr(t, b)
            if va is not None and vb is not None:
                stage_ms[name].append(1000.0 * (vb - va))
        last = _last_time(t)
        if t.audio_in is not None and last is not None:
            total_ms.append(1000.0 * (last - t.audio_in))
    stage_ms = {k: v for k, v in stage_ms.items() if v}
    stages = {k: _percentiles(v) for k, v in stage_ms.items()}
    if total_ms:
        stages["total"] = _percentiles(total_ms)

    first_frame_ms = None
    first_speech = next((t for t in speech if t.audio_in is not None and _last_time(t) is not None), None)
    if first_speech is not None:
        first_frame_ms = 1000.0 * (_last_time(first_speech) - first_speech.audio_in)

    sustained_fps = rtf = None
    late = 0
    if outs:
        times = np.array([o for o, _ in outs])
        span = float(times.max() - times.min())
        if len(outs) > 1 and span > 0:
            sustained_fps = (len(outs) - 1) / span
        t_first_out = float(times.min())
        f0 = outs[0][1].frame
        slots = t_first_out + (np.array([t.frame for _, t in outs]) - f0 + slack_frames) / fps
        late = int(np.sum(times > slots + 1e-9))
        audio_ins = [t.audio_in for t in ts if t.audio_in is not None]
        start = min(audio_ins) if audio_ins else t_first_out
        duration = expected / fps
        rtf = (float(times.max()) - start) / duration if duration > 0 else None

    return LatencyStats(
        n_frames=len(ts),
        n_idle=len(ts) - len(speech),
        first_frame_ms=first_frame_ms,
        sustained_fps=sustained_fps,
        rtf=rtf,
        dropped=dropped,
        late=late,
        stages=stages,
        total_ms=total_ms,
        stage_ms=stage_ms,
    )


def latency_from_log(path: str | Path, fps: float = FPS) -> tuple[dict, LatencyStats]:
    """The metadata and statistics of a latency log (JSON lines written by `workbench.timing.write_latency_log`)."""
    meta, timings = read_latency_log(Path(path))
    return meta, latency_stats(timings, float(meta.get("fps", fps)) if isinstance(meta, dict) else fps)
