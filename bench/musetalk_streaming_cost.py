"""What bounded look-ahead streaming costs against the exact (reference) Whisper computation.

    PYTHONPATH=. .venv/bin/python bench/musetalk_streaming_cost.py [--seconds 5 30 60]

On the first 5 s, 30 s and 60 s of the sample eng.wav (real speech, 16 kHz), with the seeded random-init
weights of tests/test_musetalk_parity.py (Whisper-tiny's encoder as published, the reduced v1.5 UNet):
- per-frame cosine similarity between the streaming window (default BlockParams: 80 ms hop, 120 ms right
  context, look-back to the start of the 30 s segment) and the exact one (whole 30 s segments, as MuseTalk);
- the UNet output for the same latents with either condition: max |difference| relative to max |exact|.
Streaming windows are computed for every `--every`-th frame only, from exactly the encoder blocks the
streaming frontend would run for it (checked against the full frontend on the shortest clip): a full
streaming pass is one 30 s encoder call per 80 ms of audio, too slow for a shared 2-core machine.
Random weights are not trained ones: the numbers say how far the inputs the UNet sees move, not how the
mouth looks. Writes bench/results/musetalk_streaming_cost.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.models import make_synthetic_avatar, make_tiny_models  # noqa: E402
from workbench.config import (  # noqa: E402
    AUDIO_PAD_LEFT,
    WHISPER_DIM,
    WHISPER_LAYERS,
    WHISPER_STEPS_PER_FRAME,
)
from workbench.lipsync.musetalk.renderer import MuseTalkRenderer  # noqa: E402
from workbench.lipsync.musetalk.whisper_features import (  # noqa: E402
    EXACT,
    SAMPLES_PER_STEP,
    WINDOW_STEPS,
    BlockParams,
    WhisperFrontend,
    load_audio_16k,
)

SEED = 11  # the parity fixtures' weights


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def streaming_windows(runner, params: BlockParams, audio: np.ndarray, frames: list[int]) -> np.ndarray:
    """The streaming frontend's windows of `frames` for the whole clip `audio` (pushed, then flushed)."""
    n = len(audio)
    n_steps = n // SAMPLES_PER_STEP
    hs = params.hop_steps
    cache: dict[int, np.ndarray] = {}
    out = np.zeros((len(frames), WINDOW_STEPS, WHISPER_LAYERS, WHISPER_DIM), np.float32)
    for j, i in enumerate(frames):
        lo = (i - AUDIO_PAD_LEFT) * WHISPER_STEPS_PER_FRAME
        for t in range(max(lo, 0), min(lo + WINDOW_STEPS, n_steps)):
            b = t // hs
            if b not in cache:
                start, end = params.window(b)
                hidden = runner.encode([audio[start : min(end, n)]])[0]
                o = (b * params.hop - start) // SAMPLES_PER_STEP
                cache[b] = hidden[o : o + hs]
            out[j, t - lo] = cache[b][t - b * hs]
    return out.reshape(len(frames), -1, WHISPER_DIM)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, nargs="+", default=[5, 30, 60])
    ap.add_argument("--audio", type=Path, default=ROOT.parent / "shared" / "samples" / "eng.wav")
    ap.add_argument("--every", type=int, default=25, help="measure every n-th frame (25 = one per second)")
    ap.add_argument("--check-seconds", type=float, default=2.0, help="clip checked against the full frontend")
    args = ap.parse_args()
    audio = load_audio_16k(args.audio)
    with tempfile.TemporaryDirectory() as tmp:
        models = make_tiny_models(Path(tmp) / "models", seed=SEED, versions=("v15",), vae_format="bin")
        r = MuseTalkRenderer.from_models_dir(models, device="cpu", dtype="float32", version="v15", batch_size=8)
        av = make_synthetic_avatar(n_frames=4, seed=SEED)
        latents = r.encode_crops(av.crops)
        params = BlockParams()
        check = audio[: int(args.check_seconds * 16000)]
        full = np.stack(WhisperFrontend(r.whisper, params).process(check))
        idx = list(range(0, len(full), 3))
        err = float(np.abs(streaming_windows(r.whisper, params, check, idx) - full[idx]).max())
        if err > 1e-5:
            raise SystemExit(f"the sampled streaming computation differs from the frontend by {err}")
        results = []
        for secs in args.seconds:
            if len(audio) < secs * 16000:
                raise SystemExit(f"{args.audio} is shorter than {secs} s")
            a = audio[: secs * 16000]
            t0 = time.perf_counter()
            exact = np.stack(WhisperFrontend(r.whisper, EXACT).process(a))
            t1 = time.perf_counter()
            frames = sorted(set(range(0, len(exact), args.every)) | {len(exact) - 1})
            stream = streaming_windows(r.whisper, params, a, frames)
            t2 = time.perf_counter()
            exact = exact[frames]
            cos = cosine(stream, exact)
            unet_rel = []
            for s in range(0, len(exact), 8):
                lat = latents[[k % len(latents) for k in range(s, min(s + 8, len(exact)))]]
                ue = r.unet_step(lat, exact[s : s + 8]).numpy()
                us = r.unet_step(lat, stream[s : s + 8]).numpy()
                unet_rel.extend(np.abs(us - ue).reshape(len(ue), -1).max(1) / np.abs(ue).reshape(len(ue), -1).max(1))
            unet_rel = np.array(unet_rel)
            row = {
                "seconds": secs,
                "frames_measured": len(frames),
                "cosine_mean": float(cos.mean()),
                "cosine_min": float(cos.min()),
                "cosine_p5": float(np.percentile(cos, 5)),
                "frames_cosine_below_0.99": int((cos < 0.99).sum()),
                "window_max_abs_diff": float(np.abs(stream - exact).max()),
                "window_max_abs_exact": float(np.abs(exact).max()),
                "unet_rel_diff_mean": float(unet_rel.mean()),
                "unet_rel_diff_max": float(unet_rel.max()),
                "exact_seconds": round(t1 - t0, 2),
                "streaming_seconds": round(t2 - t1, 2),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "bench" / "results" / "musetalk_streaming_cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "audio": args.audio.name,
        "weights": f"seeded random init (seed {SEED}): Whisper-tiny encoder as published, reduced v1.5 UNet",
        "every_nth_frame": args.every,
        "frontend_check_max_diff": err,
        "block_params": {"hop_frames": params.hop_frames, "right_frames": params.right_frames},
        "lookahead_ms": params.lookahead_ms,
        "results": results,
    }
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
