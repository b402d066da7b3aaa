"""How a run's numbers were made, recorded with the run, and the differences `eval compare` warns about.

Sync scores do not reproduce between papers for want of exactly this (LatentSync #134, #168: 61 % against 94 %
from one undocumented preprocessing step; Wav2Lip #579, #738). Every run folder's metadata.json gets a
`provenance` block: package versions, the git commit, ffmpeg's version, how frames reach 25 fps, the crop
scheme, the detector and landmark fitter, the weights' hashes and the device.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata as importlib_metadata

from workbench.config import FPS, SAMPLE_RATE
from workbench.evaluation import face_track as ft

PACKAGES = ("numpy", "scipy", "opencv-python-headless", "opencv-python", "dlib", "librosa", "soxr", "torch", "pandas")
FRAME_RATE = (
    f"decoded through ffmpeg at a constant {FPS} fps by timestamp (workbench.media.read_video), "
    f"audio resampled to {SAMPLE_RATE} Hz mono"
)


def package_versions(names=PACKAGES) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = importlib_metadata.version(n)
        except importlib_metadata.PackageNotFoundError:
            continue
    return out


def ffmpeg_version() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return "absent"
    try:
        res = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({type(e).__name__})"
    first = res.stdout.splitlines()[0] if res.stdout else ""
    return first.replace("ffmpeg version ", "").split(" Copyright")[0].strip() or "unknown"


def crop_scheme() -> str:
    return (
        f"syncnet_python tracks: IoU>{ft.IOU_THRESHOLD}, gaps<={ft.NUM_FAILED_DET}, median {ft.SMOOTH_KERNEL}, "
        f"crop_scale {ft.CROP_SCALE}, {ft.CROP_SIZE}px; landmarks dlib68 fitted twice per frame (upright)"
    )


def provenance(git: dict, machine: dict, device: str, face_detector: str, used_detectors: list[str], weights: dict):
    """The block stored as metadata["provenance"]."""
    return {
        "git_commit": git.get("commit", "unknown"),
        "git_dirty": git.get("dirty"),
        "packages": package_versions(),
        "python": machine.get("python"),
        "ffmpeg": ffmpeg_version(),
        "frame_rate": FRAME_RATE,
        "crop_scheme": crop_scheme(),
        "detector": {"requested": face_detector, "used": sorted(set(used_detectors))},
        "weights": weights,
        "device": {"setting": device, "cuda": machine.get("cuda"), "gpu": machine.get("gpu", "")},
    }


def _flat(d, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def differences(a: dict, b: dict) -> list[str]:
    """One line per provenance field that differs between two runs' metadata (a: baseline, b: candidate)."""
    pa, pb = a.get("provenance"), b.get("provenance")
    if pa is None or pb is None:
        which = "either run" if pa is None and pb is None else ("the baseline" if pa is None else "the candidate")
        return [f"{which} records no provenance (made before it was recorded): the two may not be comparable"]
    fa, fb = _flat(pa), _flat(pb)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key == "git_dirty":
            continue
        va, vb = fa.get(key, "—"), fb.get(key, "—")
        if va != vb:
            out.append(f"{key}: {va} → {vb}")
    return out
