"""One evaluation case: its output, how it runs, and the device its scorers use.

`run_case` is shared by the local runner (workbench/evaluation/runner.py: in process or in spawned worker
processes) and the Ray runner (workbench/evaluation/distributed.py); both import it from here and not each
other. Generated cases render through the engine handed in; reference cases are scored as they are; latency
logs are read. A case never raises: a failure is a row with status 'failed' and the error.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench.avatars.model import PrepParams
from workbench.config import FPS, SAMPLE_RATE, Settings
from workbench.evaluation.case_quality import quality_fields, stream_fields
from workbench.evaluation.degrade import degrade_frames
from workbench.evaluation.errors import ManifestError
from workbench.evaluation.landmark_sync import shift_audio
from workbench.evaluation.latency import latency_from_log, latency_stats
from workbench.evaluation.manifest import GeneratedCase, LatencyLogCase, ReferenceCase, Suite
from workbench.evaluation.scoring import Scorers, score_clip
from workbench.media import load_audio, read_video, write_video

if TYPE_CHECKING:
    from workbench.engine import Engine

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


@dataclass
class CaseOutput:
    row: dict  # one line of the per-case table
    details: dict  # curves and per-frame latencies, for plots


def scorer_device(settings: Settings) -> str | None:
    """The device the scorers run on: the settings' device, or None ("auto": the scorers pick) for "auto"."""
    return None if settings.device == "auto" else settings.device


# --- one case -----------------------------------------------------------------------------------
def _trim(audio: np.ndarray, start: float, seconds: float | None) -> np.ndarray:
    a = audio[int(round(start * SAMPLE_RATE)) :]
    return a[: int(round(seconds * SAMPLE_RATE))] if seconds else a


def sync_fields(row: dict, details: dict, scores, expected: int) -> None:
    """The sync scores of one clip into its table row (offsets against the expected one) and its details."""
    if scores.landmark is not None:
        ls = scores.landmark
        off = ls.reported_offset  # None: undetermined, and then no error or in-sync verdict either
        row.update(
            ls_offset=off,
            ls_offset_error=None if off is None else abs(off - expected),
            ls_peak=ls.peak,
            ls_confidence=ls.confidence,
            ls_evidence=ls.evidence,
            ls_determined=int(ls.determined),
            ls_in_sync=None if off is None else int(abs(off - expected) <= 1),
            ls_margin=ls.margin,
            ls_lag0=ls.at(expected),
        )
        details["landmark_sync"] = ls.to_dict()
    if scores.syncnet is not None:
        sn = scores.syncnet
        row.update(
            syncnet_offset=sn.offset,
            syncnet_offset_error=abs(sn.offset - expected),
            syncnet_lse_d=sn.min_dist,
            syncnet_lse_c=sn.confidence,
        )
        details["syncnet"] = sn.to_dict()
        details["syncnet_tracks"] = scores.syncnet_tracks
    row.update(face_detector=scores.face_detector, track_frames=scores.track_frames, n_tracks=scores.n_tracks)
    if scores.notes:
        row["notes"] = "; ".join(scores.notes)


def run_case(
    case, suite: Suite, case_dir: Path, scorers: Scorers, engine: Engine, progress: Progress | None = None
) -> CaseOutput:
    """Evaluate one case; never raises: a failure is a row with status 'failed' and the error."""
    t0 = time.perf_counter()
    row: dict = {
        "case": case.id,
        "kind": case.kind,
        "status": "ok",
        "error": "",
        "expected_offset": case.audio_shift_frames,
    }
    details: dict = {"case": case.id}
    try:
        missing = [f"{k}: {p}" for k, p in suite.files_of(case).items() if not p.exists()]
        if missing:
            raise ManifestError(f"case {case.id}: files not found: " + ", ".join(missing))
        if isinstance(case, GeneratedCase):
            _run_generated(case, suite, case_dir, scorers, engine, row, details, progress)
        elif isinstance(case, ReferenceCase):
            _run_reference(case, suite, scorers, row, details, progress)
        elif isinstance(case, LatencyLogCase):
            _run_latency_log(case, suite, row, details)
    except Exception as e:  # a crashed case is reported, never fatal to the run
        log.warning("case %s failed: %s", case.id, e)
        row.update(status="failed", error=f"{type(e).__name__}: {e}")
        details["traceback"] = traceback.format_exc()
    row["seconds"] = round(time.perf_counter() - t0, 3)
    return CaseOutput(row, details)


def _run_generated(
    case: GeneratedCase,
    suite: Suite,
    case_dir: Path,
    scorers: Scorers,
    engine: Engine,
    row: dict,
    details: dict,
    progress: Progress | None,
) -> None:

    files = suite.files_of(case)
    renderer = engine.renderer_for(case.renderer)
    row["renderer"] = renderer.describe()
    params = PrepParams(
        bbox_shift=case.bbox_shift,
        extra_margin=case.extra_margin,
        parsing_mode=case.parsing_mode,
        max_frames=case.max_frames,
    )
    row.update(
        bbox_shift=case.bbox_shift,
        extra_margin=case.extra_margin,
        batch_size=case.batch_size or engine.settings.batch_size,
    )
    # An evaluation leaves the avatar list as it was, and scores the source's own frames, never a cached avatar's
    # JPEG-packed copy: the same suite gives the same numbers whatever the app has cached.
    avatar = engine.prepare(files["source"], params, save=False, reuse=False)
    row["renderer"] = renderer.describe_for(avatar)
    audio = _trim(load_audio(files["audio"]), case.audio_start, case.max_seconds)
    case_dir.mkdir(parents=True, exist_ok=True)
    spec = case.degrade
    render_progress = (lambda f, m="": progress(0.5 * f, f"render {m}")) if progress else None
    if spec is not None and spec.any:
        # A deliberate regression (a control): render in memory, degrade, then write the same file.
        timings: list = []
        driving = shift_audio(audio, -spec.delay_frames) if spec.delay_frames else audio
        t0 = time.perf_counter()
        out = engine.render_frames(avatar, driving, 0, timings, renderer=case.renderer, batch_size=case.batch_size)
        write_video(case_dir / "render.mp4", degrade_frames(out, avatar, spec), FPS, audio16k=audio)
        result_frames, result_timings, result_seconds = len(out), timings, time.perf_counter() - t0
        row["degrade"] = spec.model_dump_json(exclude_defaults=True)
    else:
        result = engine.render_file(
            avatar,
            audio,
            case_dir / "render.mp4",
            progress=render_progress,
            renderer=case.renderer,
            batch_size=case.batch_size,
        )
        result_frames, result_timings, result_seconds = result.n_frames, result.timings, result.seconds
    row["n_frames"] = result_frames
    row["render_seconds"] = round(result_seconds, 3)
    if "latency" in case.metrics and result_timings:
        stats = latency_stats(result_timings)
        row.update(stats.flat())
        details["latency"] = stats.to_dict()
    sync_metrics = [m for m in case.metrics if m in ("landmark_sync", "syncnet")]
    if sync_metrics:
        frames, _ = read_video(case_dir / "render.mp4")
        scored_audio = shift_audio(audio, case.audio_shift_frames)
        scores = score_clip(
            frames,
            scored_audio,
            scorers,
            sync_metrics,
            case.max_offset,
            progress=(lambda f, m="": progress(0.5 + 0.5 * f, m)) if progress else None,
        )
        sync_fields(row, details, scores, case.audio_shift_frames)
        if "quality" in case.metrics:
            quality_fields(frames, scored_audio, scores, scorers.fitter, avatar, row, details)
        if "stream" in case.metrics:
            stream_fields(engine, avatar, audio, case.renderer, scores, scorers.fitter, row, details, case.max_offset)


def _run_reference(
    case: ReferenceCase, suite: Suite, scorers: Scorers, row: dict, details: dict, progress: Progress | None
) -> None:

    files = suite.files_of(case)
    first = int(round(case.start * FPS))
    last = first + int(round(case.max_seconds * FPS)) if case.max_seconds else None
    frames, _ = read_video(files["video"], max_frames=last)
    audio = load_audio(files.get("audio", files["video"]))
    frames = frames[first:]
    if case.max_seconds:
        frames = frames[: int(round(case.max_seconds * FPS))]
    audio = _trim(audio, first / FPS, case.max_seconds)
    row["n_frames"] = len(frames)
    row["renderer"] = "reference"
    scores = score_clip(
        frames, shift_audio(audio, case.audio_shift_frames), scorers, case.metrics, case.max_offset, progress=progress
    )
    sync_fields(row, details, scores, case.audio_shift_frames)
    if "quality" in case.metrics:
        quality_fields(frames, shift_audio(audio, case.audio_shift_frames), scores, scorers.fitter, None, row, details)


def _run_latency_log(case: LatencyLogCase, suite: Suite, row: dict, details: dict) -> None:
    meta, stats = latency_from_log(suite.files_of(case)["log"])
    row["renderer"] = str(meta.get("renderer", "")) if isinstance(meta, dict) else ""
    row["n_frames"] = stats.n_frames
    row.update(stats.flat())
    details["latency"] = stats.to_dict()
    details["log_meta"] = meta
