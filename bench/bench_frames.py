"""Prepared-avatar storage: disk size, frame codecs, and the decode cost on the realtime path.

Prepares examples/yongen.mp4 at the default PrepParams (all 268 frames, dlib, landmark masks, no VAE: the CPU
renderer's avatar) into a temporary cache and reports
* the avatar folder's size (target <= 150 MB; frames.npy alone was 690 MB of the 759 MB before),
* for each candidate frame codec, bytes per frame, encode and decode ms per frame and PSNR vs the source frames
  (every 10th frame),
* the realtime path with the stored (decoded-on-access) frames: CPU renderer + paste-back per frame, and the
  share of the 40 ms frame budget at 25 fps it takes,
* resident memory of the loaded avatar (frames decoded on access, not held).

    .venv/bin/python bench/bench_frames.py          → table + bench/results/avatar-storage.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workbench.avatars.frames import CODEC, EncodedFrames  # noqa: E402
from workbench.avatars.model import PrepParams  # noqa: E402
from workbench.avatars.pipeline import load_source, prepare_avatar  # noqa: E402
from workbench.avatars.store import AvatarCache  # noqa: E402
from workbench.config import FPS, SAMPLES_PER_FRAME  # noqa: E402
from workbench.faces.landmarks import get_detector  # noqa: E402
from workbench.lipsync.cpu.renderer import CPURenderer  # noqa: E402
from workbench.media import load_audio  # noqa: E402

SOURCE = REPO / "examples" / "yongen.mp4"
SPEECH = REPO / "examples" / "speech_en.ogg"
OUT = REPO / "bench" / "results" / "avatar-storage.json"
FRAME_BUDGET_MS = 1000.0 / FPS
CODECS = {
    "jpeg q95 4:4:4 (stored)": (
        ".jpg",
        [
            cv2.IMWRITE_JPEG_QUALITY,
            95,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        ],
    ),
    "jpeg q95 4:2:0": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
    "png level 1 (lossless)": (".png", [cv2.IMWRITE_PNG_COMPRESSION, 1]),
    "webp lossless": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dir_mb(d: Path) -> dict[str, float]:
    return {f.name: round(f.stat().st_size / 1e6, 2) for f in sorted(d.iterdir()) if f.is_file()}


def codec_table(frames: np.ndarray) -> list[dict]:
    sub = frames[::10]
    rows = []
    for name, (ext, params) in CODECS.items():
        t = time.perf_counter()
        bufs = [cv2.imencode(ext, f, params)[1] for f in sub]
        enc = (time.perf_counter() - t) / len(sub)
        t = time.perf_counter()
        dec = [cv2.imdecode(b, cv2.IMREAD_COLOR) for b in bufs]
        dec_ms = (time.perf_counter() - t) / len(sub)
        psnr = [cv2.PSNR(d, f) for d, f in zip(dec, sub, strict=True)]
        per = float(np.mean([b.nbytes for b in bufs]))
        rows.append(
            {
                "codec": name,
                "mb_per_frame": round(per / 1e6, 3),
                "mb_all_frames": round(per * len(frames) / 1e6, 1),
                "encode_ms": round(enc * 1e3, 1),
                "decode_ms": round(dec_ms * 1e3, 1),
                "psnr_db_min": round(float(min(psnr)), 1) if np.isfinite(min(psnr)) else "lossless",
            }
        )
    return rows


def realtime_cost(avatar, n: int = 100) -> dict:
    """CPU renderer + compositor per frame over n speech frames, looping the avatar as the stream does."""
    renderer = CPURenderer()
    audio = load_audio(SPEECH)[: (n + 10) * SAMPLES_PER_FRAME]
    conds = renderer.new_frontend().process(audio)[:n]
    idx = [avatar.loop_index(k) for k in range(len(conds))]
    renderer.render(avatar, idx[:2], conds[:2])  # rigs built, caches warm
    t = time.perf_counter()
    for i, c in zip(idx, conds, strict=True):
        renderer.render(avatar, [i], [c])
    per = (time.perf_counter() - t) / len(conds)
    return {
        "frames": len(conds),
        "ms_per_frame": round(per * 1e3, 1),
        "budget_share": round(per * 1e3 / FRAME_BUDGET_MS, 2),
    }


def main() -> None:
    frames, _ = load_source(SOURCE, None)
    codecs = codec_table(frames)
    with tempfile.TemporaryDirectory() as tmp:
        cache = AvatarCache(Path(tmp) / "cache")
        t = time.perf_counter()
        prepared = prepare_avatar(SOURCE, PrepParams(), get_detector("dlib"), store=cache)
        prep_s = time.perf_counter() - t
        d = cache.avatars_dir / prepared.avatar_id
        files = dir_mb(d)
        total = sum(files.values())
        rss0 = rss_mb()
        loaded = cache.load(prepared.avatar_id)
        assert isinstance(loaded.frames, EncodedFrames)
        t = time.perf_counter()
        for i in range(len(loaded)):
            loaded.frames._decode(i)
        decode_ms = (time.perf_counter() - t) / len(loaded) * 1e3
        psnr = min(cv2.PSNR(np.asarray(loaded.frames[i]), frames[i]) for i in range(0, len(loaded), 10))
        stored = realtime_cost(loaded)
        raw = realtime_cost(replace(loaded, frames=frames))  # the same avatar with the source frames in memory
        result = {
            "source": "examples/yongen.mp4 (= ../shared/samples/yongen.mp4), 268 frames 704x1216, default PrepParams",
            "codec": CODEC,
            "avatar_mb": round(total, 1),
            "files_mb": files,
            "uncompressed_frames_mb": round(frames.nbytes / 1e6, 1),
            "prepare_seconds": round(prep_s, 1),
            "decode_ms_per_frame": round(decode_ms, 1),
            "psnr_db_min_every_10th": round(float(psnr), 1),
            "realtime_stored_frames": stored,
            "realtime_in_memory_frames": raw,
            "rss_mb_before_load": round(rss0, 0),
            "rss_mb_after_realtime": round(rss_mb(), 0),
            "codecs_every_10th_frame": codecs,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs shared with other jobs",
            "load_average_1min": round(os.getloadavg()[0], 1),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"avatar {result['avatar_mb']} MB (frames uncompressed {result['uncompressed_frames_mb']} MB): {files}")
    print(f"decode {result['decode_ms_per_frame']} ms/frame, min PSNR {result['psnr_db_min_every_10th']} dB")
    print(f"realtime CPU renderer: stored frames {stored}, in-memory {raw}")
    print(f"{'codec':28} {'MB/frame':>9} {'MB all':>8} {'enc ms':>7} {'dec ms':>7} {'PSNR':>9}")
    for r in codecs:
        print(
            f"{r['codec']:28} {r['mb_per_frame']:>9} {r['mb_all_frames']:>8} {r['encode_ms']:>7} "
            f"{r['decode_ms']:>7} {r['psnr_db_min']!s:>9}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
