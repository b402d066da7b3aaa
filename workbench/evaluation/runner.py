"""Run a suite: generated cases through the engine, reference cases as they are, latency logs read; then report.

Generated cases render through the engine the caller passes (the app's, the CLI's): its renderers and
its render lock, so an evaluation loads no second copy of a model. Each case runs inside its own try: a
crashed case becomes a failed row with its error and the others finish. `jobs > 1` runs cases in parallel
worker processes (spawned, so no torch or dlib state is shared by fork), each with one engine of its own;
`ray=RayOptions(...)` runs them on a Ray cluster instead (workbench/evaluation/distributed.py), same run folder.
The run folder is written through `workbench.atomic.atomic_dir`: it appears complete or not at all.
"""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workbench import atomic
from workbench.config import FPS, SAMPLE_RATE, Settings
from workbench.evaluation.case_quality import quality_fields, stream_fields
from workbench.evaluation.errors import ManifestError
from workbench.evaluation.manifest import GeneratedCase, LatencyLogCase, ReferenceCase, Suite, load_suite
from workbench.evaluation.scoring import Scorers, score_clip

if TYPE_CHECKING:
    from workbench.engine import Engine
    from workbench.evaluation.distributed import RayOptions

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


@dataclass
class CaseOutput:
    row: dict  # one line of the per-case table
    details: dict  # curves and per-frame latencies, for plots


@dataclass
class RunOutput:
    path: Path
    rows: list[dict]
    summary: dict
    metadata: dict


# --- one case -----------------------------------------------------------------------------------
def _trim(audio: np.ndarray, start: float, seconds: float | None) -> np.ndarray:
    a = audio[int(round(start * SAMPLE_RATE)) :]
    return a[: int(round(seconds * SAMPLE_RATE))] if seconds else a


def _sync_fields(row: dict, details: dict, scores, expected: int) -> None:
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
    from workbench.avatars.model import PrepParams
    from workbench.evaluation.landmark_sync import shift_audio
    from workbench.evaluation.latency import latency_stats
    from workbench.media import load_audio, read_video

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
    avatar = engine.prepare(files["source"], params, save=False)  # an evaluation leaves the avatar list as it was
    row["renderer"] = renderer.describe_for(avatar)
    audio = _trim(load_audio(files["audio"]), case.audio_start, case.max_seconds)
    case_dir.mkdir(parents=True, exist_ok=True)
    spec = case.degrade
    render_progress = (lambda f, m="": progress(0.5 * f, f"render {m}")) if progress else None
    if spec is not None and spec.any:
        # A deliberate regression (a control): render in memory, degrade, then write the same file.
        from workbench.evaluation.degrade import degrade_frames
        from workbench.media import write_video

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
        _sync_fields(row, details, scores, case.audio_shift_frames)
        if "quality" in case.metrics:
            quality_fields(frames, scored_audio, scores, scorers.fitter, avatar, row, details)
        if "stream" in case.metrics:
            stream_fields(engine, avatar, audio, case.renderer, scores, scorers.fitter, row, details, case.max_offset)


def _run_reference(
    case: ReferenceCase, suite: Suite, scorers: Scorers, row: dict, details: dict, progress: Progress | None
) -> None:
    from workbench.evaluation.landmark_sync import shift_audio
    from workbench.media import load_audio, read_video

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
    _sync_fields(row, details, scores, case.audio_shift_frames)
    if "quality" in case.metrics:
        quality_fields(frames, shift_audio(audio, case.audio_shift_frames), scores, scorers.fitter, None, row, details)


def _run_latency_log(case: LatencyLogCase, suite: Suite, row: dict, details: dict) -> None:
    from workbench.evaluation.latency import latency_from_log

    meta, stats = latency_from_log(suite.files_of(case)["log"])
    row["renderer"] = str(meta.get("renderer", "")) if isinstance(meta, dict) else ""
    row["n_frames"] = stats.n_frames
    row.update(stats.flat())
    details["latency"] = stats.to_dict()
    details["log_meta"] = meta


# --- worker processes ---------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_case(case, suite: Suite, case_dir: str, settings_json: str, face_detector: str) -> CaseOutput:
    # A worker process is an entry point: it builds its engine and scorers once and keeps them for its cases.
    from workbench.engine import Engine

    settings = Settings.model_validate_json(settings_json)
    key = (settings_json, face_detector)
    if _WORKER.get("key") != key:
        _WORKER.update(
            key=key, engine=Engine(settings), scorers=Scorers(settings.models_dir, _device(settings), face_detector)
        )
    return run_case(case, suite, Path(case_dir), _WORKER["scorers"], _WORKER["engine"])


def _device(settings: Settings) -> str | None:
    return None if settings.device == "auto" else settings.device


# --- a whole suite ------------------------------------------------------------------------------
def run_suite(
    suite: Suite | str | Path,
    engine: Engine,
    runs_dir: str | Path | None = None,
    jobs: int = 1,
    face_detector: str = "auto",
    run_name: str | None = None,
    progress: Progress | None = None,
    ray: RayOptions | None = None,
) -> RunOutput:
    """Evaluate every case of a suite into a new run folder under `runs_dir` and write its reports.

    With `ray`, cases run on a Ray cluster whose workers build engines of their own from `engine.settings`
    (`jobs` caps the workers; 0 or less: as many as the cluster holds); the driver writes the same run folder."""
    from workbench.evaluation.report import summarise, write_run

    if not isinstance(suite, Suite):
        suite = load_suite(suite, check_files=False)
    settings = engine.settings
    runs_dir = Path(runs_dir) if runs_dir is not None else Path(settings.runs_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    final = _unique(runs_dir / (run_name or f"{suite.name}-{stamp}"))
    t0 = time.perf_counter()
    outputs: dict[str, CaseOutput] = {}
    n = len(suite.cases)
    extra_meta: dict = {}
    extra_notes: list[str] = []
    with atomic.atomic_dir(final) as tmp:
        if ray is not None:
            from workbench.evaluation.distributed import run_cases_on_ray

            dist = run_cases_on_ray(suite, tmp, settings, face_detector, ray, max_workers=jobs, progress=progress)
            outputs, weights, syncnet_note = dist.outputs, dist.weights, dist.syncnet_note
            jobs, extra_meta, extra_notes = dist.workers, {"ray": dist.metadata}, dist.notes
        elif jobs <= 1:
            scorers = Scorers(settings.models_dir, _device(settings), face_detector)
            for k, case in enumerate(suite.cases):
                sub = (lambda f, m="", k=k, c=case.id: progress((k + f) / n, f"{c}: {m}")) if progress else None
                outputs[case.id] = run_case(case, suite, tmp / "cases" / case.id, scorers, engine, sub)
                if progress:
                    progress((k + 1) / n, f"{case.id}: {outputs[case.id].row['status']}")
            weights = scorers.weight_hashes()
            syncnet_note = scorers.syncnet_missing
        else:
            settings_json = settings.model_dump_json()
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = {
                    pool.submit(_worker_case, c, suite, str(tmp / "cases" / c.id), settings_json, face_detector): c
                    for c in suite.cases
                }
                for done, fut in enumerate(as_completed(futures), 1):
                    case = futures[fut]
                    try:
                        outputs[case.id] = fut.result()
                    except Exception as e:  # the worker process itself died
                        outputs[case.id] = CaseOutput(
                            {
                                "case": case.id,
                                "kind": case.kind,
                                "status": "failed",
                                "error": f"worker crashed: {type(e).__name__}: {e}",
                                "expected_offset": case.audio_shift_frames,
                            },
                            {},
                        )
                    if progress:
                        progress(done / n, f"{case.id}: {outputs[case.id].row['status']}")
            probe = Scorers(settings.models_dir, None, face_detector)
            weights = probe.weight_hashes()
            syncnet_note = (
                None
                if weights["syncnet_v2.model"] != "none"
                else ("SyncNet weights (syncnet_v2.model) not found: LSE-C/LSE-D skipped")
            )
        rows = [outputs[c.id].row for c in suite.cases]
        details = {c.id: outputs[c.id].details for c in suite.cases}
        summary = summarise(rows)
        notes = ([syncnet_note] if syncnet_note else []) + extra_notes
        if notes:
            summary["notes"] = notes
        metadata = run_metadata(suite, settings, jobs, face_detector, weights, rows, time.perf_counter() - t0)
        metadata["parameters"].update(extra_meta)
        write_run(tmp, rows, summary, metadata, details)
    return RunOutput(final, rows, summary, metadata)


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    k = 2
    while path.with_name(f"{path.name}-{k}").exists():
        k += 1
    return path.with_name(f"{path.name}-{k}")


def git_commit(repo: Path | None = None) -> dict:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {
        "commit": commit.stdout.strip() if commit.returncode == 0 else "unknown",
        "dirty": bool(dirty.stdout.strip()) if dirty.returncode == 0 else None,
    }


def machine_info() -> dict:
    import torch

    info = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def renderer_weights(settings: Settings, rows: list[dict]) -> dict:
    """What produced the generated frames: the MuseTalk files' status, or 'random/none' for a weight-free renderer."""
    used = {r.get("renderer", "") for r in rows if r.get("kind") == "generated"}
    if not any("musetalk" in str(u).lower() for u in used):
        return {"renderer_weights": "random/none"}
    try:
        from workbench import weights

        report = weights.check(settings.models_dir)
        return {"renderer_weights": {name: c.status for name, c in report.components.items()}}
    except Exception as e:  # the weights report is informative only
        return {"renderer_weights": f"unknown ({type(e).__name__}: {e})"}


def run_metadata(
    suite: Suite, settings: Settings, jobs: int, face_detector: str, weights: dict, rows: list[dict], seconds: float
) -> dict:
    from workbench.evaluation.provenance import provenance

    git, machine = git_commit(), machine_info()
    all_weights = {**weights, **renderer_weights(settings, rows)}
    used = [str(r["face_detector"]) for r in rows if r.get("face_detector")]
    return {
        "suite": suite.name,
        "suite_root": str(suite.root),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git,
        "machine": machine,
        "provenance": provenance(git, machine, settings.device, face_detector, used, all_weights),
        "renderers": sorted({str(r.get("renderer", "")) for r in rows if r.get("renderer")}),
        "weights": all_weights,
        "parameters": {
            "jobs": jobs,
            "face_detector": face_detector,
            "device": settings.device,
            "batch_size": settings.batch_size,
            "models_dir": str(settings.models_dir),
            "cases": [c.model_dump(mode="json") for c in suite.cases],
        },
        "timings": {"total_seconds": round(seconds, 3), "cases": {r["case"]: r.get("seconds") for r in rows}},
    }
