"""MuseTalk engine speed: preparation, audio features, UNet, VAE decode and paste-back, per frame.

    .venv/bin/python bench/bench_engine.py            # tiny and full-size random-init models on this machine
    .venv/bin/python bench/bench_engine.py --quick    # tiny only
    .venv/bin/python bench/bench_engine.py --full     # full size only (the published configs)
    .venv/bin/python bench/bench_engine.py --full --device cuda --dtype float16
    .venv/bin/python bench/bench_engine.py --models-dir models   # real weights, if you have them

Weights are random (same architectures and file formats as the release), so the timings are real and the
pictures are noise. Prints a table and writes bench/results/engine-<device>.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.models import make_synthetic_avatar, make_tiny_models  # noqa: E402
from workbench.atomic import write_json  # noqa: E402
from workbench.config import SAMPLE_RATE  # noqa: E402
from workbench.lipsync.compositor import Compositor  # noqa: E402
from workbench.lipsync.musetalk.renderer import MuseTalkRenderer  # noqa: E402
from workbench.lipsync.musetalk.whisper_features import BlockParams, WhisperFrontend  # noqa: E402
from workbench.weights import has_musetalk  # noqa: E402


def timed(fn, iters: int, sync) -> list[float]:
    out = []
    for _ in range(iters):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def bench_config(models_dir: Path, label: str, args, sync) -> dict:

    res: dict = {"config": label, "models_dir": str(models_dir)}
    t = time.perf_counter()
    r = MuseTalkRenderer.from_models_dir(models_dir, device=args.device, dtype=args.dtype)
    sync()
    res["load_s"] = time.perf_counter() - t
    res["renderer"] = r.describe()
    heavy = label == "full" and r.device.type == "cpu"
    iters = 1 if heavy else args.iters
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    res["iterations"] = iters

    # avatar preparation: VAE encode of the masked and the full crop
    av = make_synthetic_avatar(n_frames=max(batches), frame_hw=(1216, 704), seed=0)
    nb = min(4, len(av))
    r.encode_crops(av.crops[:1])  # warm-up
    ts = timed(lambda: r.encode_crops(av.crops[:nb]), iters, sync)
    res["prep_encode_ms_per_frame"] = 1000 * min(ts) / nb
    av.latents = np.concatenate([r.encode_crops(av.crops[i : i + nb]) for i in range(0, len(av), nb)])

    # Whisper: one 30 s block, and the default streaming frontend on speech-length audio
    win = [rng.standard_normal(SAMPLE_RATE * 4).astype(np.float32) * 0.1]
    r.whisper.encode(win)
    res["whisper_block_ms"] = 1000 * min(timed(lambda: r.whisper.encode(win), iters + 1, sync))
    fe = r.whisper.feature_extractor
    fe_dev = "cuda" if r.device.type == "cuda" else "cpu"
    res["logmel_block_ms"] = 1000 * min(
        timed(lambda: fe(win, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=fe_dev), iters + 1, sync)
    )
    seconds = 1.0 if heavy or r.device.type == "cpu" else 4.0
    audio = rng.standard_normal(int(SAMPLE_RATE * seconds)).astype(np.float32) * 0.1
    params = BlockParams()
    ts = timed(lambda: WhisperFrontend(r.whisper, params).process(audio), 1, sync)
    res["features_s_per_audio_s"] = ts[0] / seconds
    res["block_params"] = {
        "hop_frames": params.hop_frames,
        "right_frames": params.right_frames,
    }
    res["lookahead_ms_best_worst"] = list(params.lookahead_ms)

    # UNet and VAE decode per frame at each batch size
    cond = rng.standard_normal((max(batches), 50, 384)).astype(np.float32)
    r.unet_step(av.latents[:1], cond[:1])  # warm-up
    for b in batches:
        lat, c = av.latents[:b], cond[:b]
        ts = timed(lambda lat=lat, c=c: r.unet_step(lat, c), iters, sync)
        res[f"unet_ms_per_frame_b{b}"] = 1000 * min(ts) / b
        pred = r.unet_step(lat, c)
        if b == batches[0]:
            r.decode_latents(pred)  # warm-up
        ts = timed(lambda pred=pred: r.decode_latents(pred), iters, sync)
        res[f"decode_ms_per_frame_b{b}"] = 1000 * min(ts) / b

    # paste-back on a 704x1216 portrait frame (the mask resize is cached per frame after the first paste)
    comp = Compositor(av)
    face = r.decode_latents(r.unet_step(av.latents[:1], cond[:1]))[0]
    t = time.perf_counter()
    comp.paste(0, face)
    res["composite_first_ms"] = 1000 * (time.perf_counter() - t)
    ts = timed(lambda: comp.paste(0, face), 20, lambda: None)
    res["composite_ms_per_frame"] = 1000 * min(ts)

    best = min(batches, key=lambda b: res[f"unet_ms_per_frame_b{b}"] + res[f"decode_ms_per_frame_b{b}"])
    per_frame = res[f"unet_ms_per_frame_b{best}"] + res[f"decode_ms_per_frame_b{best}"] + res["composite_ms_per_frame"]
    res["best_batch"] = best
    res["render_fps_estimate"] = 1000.0 / per_frame
    return res


def print_table(results: list[dict], device_name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = [
        ("load (s)", "load_s", 1),
        ("prep: VAE encode ms/frame", "prep_encode_ms_per_frame", 1),
        ("Whisper block (30 s window) ms", "whisper_block_ms", 1),
        ("  of which log-mel ms", "logmel_block_ms", 1),
        ("features s per s of audio", "features_s_per_audio_s", 3),
    ]
    keys = sorted(
        {k for r in results for k in r if k.startswith(("unet_ms", "decode_ms"))},
        key=lambda k: (k.split("_")[0], int(k.rsplit("b", 1)[1])),
    )
    rows += [(k.replace("_ms_per_frame_b", " ms/frame batch "), k, 1) for k in keys]
    rows += [
        ("paste-back ms/frame", "composite_ms_per_frame", 2),
        ("paste-back first (mask resize) ms", "composite_first_ms", 2),
        ("best batch", "best_batch", 0),
        ("render fps (UNet+decode+paste)", "render_fps_estimate", 3),
    ]
    table = Table(title=f"MuseTalk engine on {device_name}")
    table.add_column("stage")
    for r in results:
        table.add_column(f"{r['config']} ({r['renderer'].split(' on ')[-1]})", justify="right")
    for name, key, nd in rows:
        table.add_row(name, *[("—" if key not in r else f"{r[key]:.{nd}f}" if nd else str(r[key])) for r in results])
    Console().print(table)
    la = results[0]["lookahead_ms_best_worst"]
    Console().print(f"features look-ahead at {results[0]['block_params']}: {la[0]:.0f}-{la[1]:.0f} ms")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="tiny models only")
    g.add_argument("--full", action="store_true", help="full-size models only")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--iters",
        type=int,
        default=3,
        help="timed iterations per measurement, the fastest is kept (full size on CPU: 1)",
    )
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--models-dir", type=Path, help="benchmark these weights (e.g. real ones) instead of random ones")
    ap.add_argument("--work-dir", type=Path, help="keep the random models here and reuse them (default: a temp folder)")
    ap.add_argument("--out", type=Path, help="JSON path (default bench/results/engine-<device>.json)")
    args = ap.parse_args()

    dev_type = (
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else torch.device(args.device).type
    )
    sync = torch.cuda.synchronize if dev_type == "cuda" else (lambda: None)
    device_name = (
        torch.cuda.get_device_name(0)
        if dev_type == "cuda"
        else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    )
    configs = ["tiny"] if args.quick else ["full"] if args.full else ["tiny", "full"]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.models_dir:
            results.append(bench_config(args.models_dir, "given", args, sync))
        else:
            for size in configs:
                # --work-dir keeps the random models for the next run (the full UNet is 3.4 GB to write)
                models = (args.work_dir or Path(tmp)) / size
                t = time.perf_counter()
                if not (args.work_dir and has_musetalk(models) and (models / f".{size}").exists()):
                    make_tiny_models(models, size=size)
                    (models / f".{size}").touch()
                made = time.perf_counter() - t
                r = bench_config(models, size, args, sync)
                r["make_models_s"] = made
                results.append(r)
                print(f"{size}: done", flush=True)

    print_table(results, device_name)
    out = args.out or ROOT / "bench" / "results" / f"engine-{dev_type}.json"
    write_json(
        out,
        {
            "device": device_name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "note": "random-init weights of the published architectures; timings are real",
            "results": results,
        },
    )
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    main()
