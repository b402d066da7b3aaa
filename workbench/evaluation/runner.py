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
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

from workbench import atomic, weights
from workbench.config import Settings
from workbench.evaluation.case import CaseOutput, Progress, run_case, scorer_device
from workbench.evaluation.distributed import RayOptions, run_cases_on_ray
from workbench.evaluation.manifest import Suite, load_suite
from workbench.evaluation.provenance import provenance
from workbench.evaluation.report import summarise, write_run
from workbench.evaluation.scoring import Scorers

if TYPE_CHECKING:
    from workbench.engine import Engine

log = logging.getLogger(__name__)


@dataclass
class RunOutput:
    path: Path
    rows: list[dict]
    summary: dict
    metadata: dict


# --- worker processes ---------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_case(case, suite: Suite, case_dir: str, settings_json: str, face_detector: str) -> CaseOutput:
    # A worker process is an entry point: it builds its engine and scorers once and keeps them for its cases.
    from workbench.engine import Engine

    settings = Settings.model_validate_json(settings_json)
    key = (settings_json, face_detector)
    if _WORKER.get("key") != key:
        _WORKER.update(
            key=key,
            engine=Engine(settings),
            scorers=Scorers(settings.models_dir, scorer_device(settings), face_detector),
        )
    return run_case(case, suite, Path(case_dir), _WORKER["scorers"], _WORKER["engine"])


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
            dist = run_cases_on_ray(suite, tmp, settings, face_detector, ray, max_workers=jobs, progress=progress)
            outputs, weights, syncnet_note = dist.outputs, dist.weights, dist.syncnet_note
            jobs, extra_meta, extra_notes = dist.workers, {"ray": dist.metadata}, dist.notes
        elif jobs <= 1:
            scorers = Scorers(settings.models_dir, scorer_device(settings), face_detector)
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
    import torch  # lazy: torch costs seconds to import, and only the run metadata needs its version here

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
        report = weights.check(settings.models_dir)
        return {"renderer_weights": {name: c.status for name, c in report.components.items()}}
    except Exception as e:  # the weights report is informative only
        return {"renderer_weights": f"unknown ({type(e).__name__}: {e})"}


def run_metadata(
    suite: Suite, settings: Settings, jobs: int, face_detector: str, weights: dict, rows: list[dict], seconds: float
) -> dict:
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
