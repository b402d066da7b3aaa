"""Make the SyncNet parity fixtures by running joonson/syncnet_python itself on seeded random weights.

    python scripts/make_syncnet_fixtures.py --reference /path/to/syncnet_python [--samples ../shared/samples]

The reference's PySceneDetect 0.5.1 (pip install --no-deps --target DIR scenedetect==0.5.1, passed as --pythonpath)
needs one fix for OpenCV >= 4.5, whose cv2.split returns a tuple: `list(cv2.split(...))` in
detectors/content_detector.py (two lines). The reference is never vendored: this script copies the given checkout to a scratch folder and patches only what
stops it running on a CPU-only machine with numpy 2 (`.cuda()` calls, `device='cuda'`, an unused torchvision
import, `np.int`). It then runs
the reference's own `run_pipeline.py` (ffmpeg conversion to 25 fps, JPEG frames, S3FD, scene split, tracking, XVID
crop video, cropped audio) and `SyncNetInstance.evaluate` on each crop video, and writes what they found to
tests/fixtures/syncnet/<clip>.json: crop boxes, per-offset mean distances, LSE-D, LSE-C and the AV offset.

Weights are seeded random (no pretrained files can be downloaded here) but in the official formats:
`syncnet_v2.model` is `SyncNetS`'s state dict, `sfd_face.pth` S3FDNet's. SyncNet's two heads carry a small trained
low-rank correction of their last layer (tests/fixtures/syncnet/syncnet_head_correction.npz, made by
scripts/train_syncnet_fixture.py on calibration clips that are not fixtures), so the fixtures' AV offsets lie inside
the +-15 range with a clear LSE-C and an audio shift of one frame moves them by one. Random S3FD finds no face, so `make_syncnet_eval_weights` redraws
its trunk He-normal (so the picture reaches the deep maps), silences every confidence head but the stride-64 one and
gives that one a bias plus a random conv: distinct, frame-dependent scores around 0.8-0.97, so the reference's and
the project's S3FD must rank, suppress, track and crop the same ~1000 px boxes, and every media step after
detection is exercised. `tests/test_syncnet_parity.py` rebuilds the same weights from the seed and checks the
project reproduces these numbers, with the reference's detections and with its own S3FD.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.models import SYNCNET_EVAL_SEED as SEED  # noqa: E402
from testkit.models import SYNCNET_FIRE_HEAD as FIRE_HEAD  # noqa: E402
from testkit.models import (  # noqa: E402
    SYNCNET_FIRE_LOGIT,
    SYNCNET_FIRE_WEIGHT_STD,
    SYNCNET_HEAD_FILE,
    SYNCNET_HEAD_PATH,
    SYNCNET_HEAD_RANK,
    SYNCNET_LOC_WEIGHT_STD,
)
from testkit.models import make_syncnet_eval_weights as make_weights  # noqa: E402

CLIPS = {
    # name: (source under samples/, audio delay in ms applied before the reference sees it; negative: advance)
    "syncnet_example": ("syncnet_example.avi", 0),
    "syncnet_example_audio_late_200ms": ("syncnet_example.avi", 200),
    # one frame (40 ms) each way: the AV offset must move by exactly one, in the reference and in the project
    "syncnet_example_audio_late_40ms": ("syncnet_example.avi", 40),
    "syncnet_example_audio_early_40ms": ("syncnet_example.avi", -40),
    "talk1": ("calibration/talk1.mp4", 0),  # 30 fps: the 25 fps conversion drops frames
    "talk3": ("calibration/talk3.mp4", 0),
}


def make_clip(src: Path, delay_ms: int, dst: Path) -> Path:
    """The clip as the reference will get it: a copy, or the audio delayed by `delay_ms` (silence in front, the
    end cut to the original length), or for a negative `delay_ms` advanced (its first -delay_ms cut, silence at the
    end), with the video stream copied untouched."""
    if not delay_ms:
        shutil.copy(src, dst)
        return dst
    if delay_ms > 0:
        shift = f"adelay={delay_ms}:all=1"
    else:
        shift = f"atrim=start={-delay_ms / 1000:.3f},asetpts=PTS-STARTPTS,apad"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy",
         "-af", f"{shift},atrim=end={_duration(src)}", "-c:a", "pcm_s16le", str(dst)],
        check=True,
    )  # fmt: skip
    return dst


def _ffmpeg_version() -> str:
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    return out.split("\n", 1)[0].split(" ")[2]


def _duration(path: Path) -> str:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=duration", "-of", "csv=p=0",
         str(path)], capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def scratch_reference(reference: Path, dest: Path, weights: Path) -> Path:
    """A runnable copy of the reference: CPU instead of CUDA, and our random sfd_face.pth where it looks."""
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns(".git"))
    patches = {
        "SyncNetInstance.py": [(".cuda()", "")],
        "run_pipeline.py": [("device='cuda'", "device='cpu'")],
        "detectors/s3fd/__init__.py": [("device='cuda'", "device='cpu'"), ("from torchvision import transforms", "")],
        "detectors/s3fd/nets.py": [("device='cuda'", "device='cpu'")],
        "detectors/s3fd/box_utils.py": [("astype(np.int)", "astype(int)")],  # np.int is gone from numpy 2
    }
    for rel, subs in patches.items():
        p = dest / rel
        text = p.read_text()
        for a, b in subs:
            text = text.replace(a, b)
        p.write_text(text)
    (dest / "detectors/s3fd/weights").mkdir(parents=True, exist_ok=True)
    shutil.copy(weights / "sfd_face.pth", dest / "detectors/s3fd/weights/sfd_face.pth")
    return dest


EVALUATE = r"""
import json, pickle, sys, glob, os, types
import numpy, torch
from SyncNetInstance import SyncNetInstance
data_dir, ref, model, out = sys.argv[1:5]
opt = types.SimpleNamespace(batch_size=20, vshift=15, data_dir=data_dir, reference=ref,
                            tmp_dir=os.path.join(data_dir, 'pytmp'), crop_dir=os.path.join(data_dir, 'pycrop'))
s = SyncNetInstance()
s.loadParameters(model)
res = []
for fname in sorted(glob.glob(os.path.join(opt.crop_dir, ref, '0*.avi'))):
    offset, conf, dists = s.evaluate(opt, videofile=fname)
    mdist = numpy.mean(numpy.stack(dists, 1), 1) if isinstance(dists, list) else dists.mean(0)
    res.append({'crop': os.path.basename(fname), 'offset': int(offset), 'lse_c': float(conf),
                'lse_d': float(mdist.min()), 'mean_dists': [float(d) for d in mdist], 'n_windows': int(len(dists))})
json.dump(res, open(out, 'w'))
"""


def run_reference(ref_dir: Path, clip: Path, name: str, work: Path, weights: Path, pythonpath: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ref_dir), pythonpath) if p))
    data_dir = work / "data"
    work.mkdir(parents=True, exist_ok=True)
    log = open(work / f"{name}.log", "w")  # noqa: SIM115 - the reference's own output, for when it fails
    subprocess.run(
        [sys.executable, "run_pipeline.py", "--videofile", str(clip), "--reference", name, "--data_dir", str(data_dir)],
        cwd=ref_dir, env=env, check=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    (ref_dir / "evaluate_fixture.py").write_text(EVALUATE)
    out = work / f"{name}.eval.json"
    subprocess.run(
        [sys.executable, "evaluate_fixture.py", str(data_dir), name, str(weights / "syncnet_v2.model"), str(out)],
        cwd=ref_dir, env=env, check=True, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return collect(work, name, pythonpath)


def collect(work: Path, name: str, pythonpath: str = "") -> dict:
    """The fixture's numbers from a finished reference run in `work` (scene.pckl holds PySceneDetect objects, so its
    package must be importable: `pythonpath`)."""
    for p in reversed([p for p in pythonpath.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)
    data_dir = work / "data"
    scores = json.loads((work / f"{name}.eval.json").read_text())
    with open(data_dir / "pywork" / name / "tracks.pckl", "rb") as f:
        tracks = pickle.load(f)
    with open(data_dir / "pywork" / name / "scene.pckl", "rb") as f:
        scenes = [(int(a.frame_num), int(b.frame_num)) for a, b in pickle.load(f)]
    n_frames = len(list((data_dir / "pyframes" / name).glob("*.jpg")))
    with open(data_dir / "pywork" / name / "faces.pckl", "rb") as f:
        detections = [[[float(v) for v in d["bbox"]] + [float(d["conf"])] for d in frame] for frame in pickle.load(f)]
    out_tracks = []
    for t, sc in zip(tracks, scores, strict=True):
        out_tracks.append(
            {
                "frames": [int(t["track"]["frame"][0]), int(t["track"]["frame"][-1])],
                "bbox": np.round(np.asarray(t["track"]["bbox"], dtype=np.float64), 4).tolist(),
                "crop_centre_size": np.round(
                    np.stack([t["proc_track"]["x"], t["proc_track"]["y"], t["proc_track"]["s"]], 1), 4
                ).tolist(),
                **sc,
            }
        )
    return {"n_frames": n_frames, "scenes": scenes, "detections": detections, "tracks": out_tracks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, type=Path, help="a checkout of joonson/syncnet_python")
    ap.add_argument("--samples", type=Path, default=ROOT.parent / "shared" / "samples")
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "syncnet")
    ap.add_argument("--pythonpath", default="", help="extra import path for the reference's deps (scenedetect 0.5.1)")
    ap.add_argument("--clips", nargs="*", default=list(CLIPS))
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (the reference's work files)")
    args = ap.parse_args(argv)
    if not (args.reference / "run_pipeline.py").is_file():
        ap.error(f"{args.reference} is not a syncnet_python checkout (no run_pipeline.py)")
    commit = subprocess.run(
        ["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="syncnet_fixtures_"))
    print("working in", tmp, flush=True)
    try:
        digests = make_weights(tmp / "weights")
        ref_dir = scratch_reference(args.reference, tmp / "syncnet_python", tmp / "weights")
        for name in args.clips:
            src, delay = CLIPS[name]
            clip = make_clip(args.samples / src, delay, tmp / f"{name}{'.mkv' if delay else Path(src).suffix}")
            start = time.monotonic()
            res = run_reference(ref_dir, clip, name, tmp / "work", tmp / "weights", args.pythonpath)
            elapsed = time.monotonic() - start
            fixture = {
                "reference": {"repository": "joonson/syncnet_python", "commit": commit or "unknown"},
                "made_by": "scripts/make_syncnet_fixtures.py",
                "clip": {"source": src, "audio_delay_ms": delay},
                "weights": {
                    "seed": SEED,
                    "fire_head": FIRE_HEAD,
                    "fire_logit": SYNCNET_FIRE_LOGIT,
                    "fire_weight_std": SYNCNET_FIRE_WEIGHT_STD,
                    "loc_weight_std": SYNCNET_LOC_WEIGHT_STD,
                    "head_correction": {
                        "file": f"tests/fixtures/syncnet/{SYNCNET_HEAD_FILE}",
                        "rank": SYNCNET_HEAD_RANK,
                        "sha256": hashlib.sha256(SYNCNET_HEAD_PATH.read_bytes()).hexdigest(),
                        "made_by": "scripts/train_syncnet_fixture.py",
                    },
                    "state_sha256": digests,
                },
                "torch": torch.__version__,
                # the lossy steps (MPEG-4, JPEG, XVID) are these builds' own: another build may move them
                "ffmpeg": _ffmpeg_version(),
                "opencv": cv2.__version__,
                "numpy": np.__version__,
                "reference_seconds": round(elapsed, 1),
                **res,
            }
            (args.out / f"{name}.json").write_text(json.dumps(fixture, indent=1) + "\n")
            print(name, flush=True)
            print(name, [(t["offset"], round(t["lse_d"], 4), round(t["lse_c"], 4)) for t in res["tracks"]])
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
