"""One prepared GPU benchmark: MuseTalk's model costs, batched throughput, concurrent realtime sessions,
and the reference MuseTalk realtime loop side by side, with random full-size weights in the official formats.

    python bench/bench_gpu.py --musetalk-repo /path/to/MuseTalk      # one H100/H200, ~6-8 minutes
    python bench/bench_gpu.py --dry-run                               # CPU, tiny configs, the whole script
    python bench/bench_gpu.py --dry-run --tiny                        # the smallest run (the test's)

Nothing is downloaded: the UNet (musetalkV15/musetalk.json + unet.pth), the VAE (sd-vae, AutoencoderKL
save_pretrained), Whisper-tiny and TAESD (taesd/, AutoencoderTiny save_pretrained) are built from their
published configurations with random weights (`testkit.models`) and loaded through the real loaders.
Random weights cost exactly what trained ones cost; the frames are noise.

Sections, each within a share of `--budget-s` (a section that runs out of time is cut short and says so):
1. `models`: per-frame milliseconds of the UNet step, VAE decode and TAESD decode at batch 1/4/8/16/32,
   float16 and bfloat16 (CUDA events, after warm-up).
2. `throughput`: frames/s through the whole render path (RenderBatcher: latents on the device, one UNet +
   decode per batch, uint8 faces copied back through pinned memory, paste-back on CPU threads), per batch
   size and decoder, optionally with channels-last and torch.compile (`--compile`).
3. `reference`: frames/s of TMElyralab/MuseTalk's own realtime_inference loop (its UNet, VAE and
   PositionalEncoding classes and `datagen`, float16 as it runs) on the same weights and batch sizes.
   Its code is imported from `--musetalk-repo` at run time and never copied into this repository.
4. `sessions`: the most concurrent 25 fps sessions (LipSyncStream + one shared RenderBatcher, Whisper
   features included) whose replies all show their first lip-synced frame <= 150 ms after the first audio
   delta with no stalls, per decoder.

Writes bench/results/gpu-<device>.json (or --out).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testkit.models import make_synthetic_avatar, make_taesd, make_tiny_models  # noqa: E402
from testkit.realtime import speech_like  # noqa: E402
from workbench import atomic  # noqa: E402
from workbench.config import FPS, REALTIME_SAMPLE_RATE  # noqa: E402

FIRST_FRAME_TARGET_MS = 150.0
DELTA_S = 0.1  # Realtime API audio deltas: 100 ms each
DELTA_SPEEDUP = 8.0  # deltas arrive faster than real time, as the Realtime API sends them


class Budget:
    """Wall-clock budget: sections ask how long they may still run."""

    def __init__(self, seconds: float):
        self.t0, self.seconds = time.perf_counter(), seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn, device, iters: int, warmup: int) -> float:
    """Mean milliseconds of fn() (CUDA events on a GPU, perf_counter on CPU)."""
    import torch

    for _ in range(warmup):
        fn()
    _sync(device)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return 1000 * (time.perf_counter() - t0) / iters


def load_renderer(models: Path, device: str, dtype: str, decoder: str):
    from workbench.lipsync.musetalk.renderer import MuseTalkRenderer

    return MuseTalkRenderer.from_models_dir(models, device=device, dtype=dtype, decoder=decoder)


# ---- 1. model costs ------------------------------------------------------------------------------
def bench_models(models: Path, cfg: dict, budget: Budget) -> list[dict]:
    import torch

    from workbench.lipsync.musetalk.decoders import make_decoder

    rows = []
    for dtype in cfg["dtypes"]:
        r = load_renderer(models, cfg["device"], dtype, "vae")
        taesd = make_decoder("taesd", r.vae, models, r.device, r.dtype)
        for bs in cfg["batches"]:
            if budget.left() < 0:
                rows.append({"dtype": dtype, "batch": bs, "skipped": "out of time"})
                continue
            lat = torch.randn(bs, 8, 32, 32, device=r.device, dtype=r.dtype)
            conds = torch.randn(bs, 50, 384, device=r.device)
            pred = torch.randn(bs, 4, 32, 32, device=r.device, dtype=r.dtype)
            with torch.inference_mode():
                it, wu = cfg["iters"], cfg["warmup"]
                unet = time_ms(lambda r=r, lat=lat, c=conds: r.unet_step(lat, c), r.device, it, wu)
                vae = time_ms(lambda r=r, p=pred: r.decoder(p), r.device, it, wu)
                tae = time_ms(lambda d=taesd, p=pred: d(p), r.device, it, wu)
            rows.append(
                {
                    "dtype": dtype,
                    "batch": bs,
                    "unet_ms_per_frame": round(unet / bs, 3),
                    "vae_decode_ms_per_frame": round(vae / bs, 3),
                    "taesd_decode_ms_per_frame": round(tae / bs, 3),
                }
            )
            print(f"models {dtype} b{bs}: " + ", ".join(f"{k} {v}" for k, v in rows[-1].items() if "ms" in k))
        del r, taesd
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


# ---- 2. throughput through the batcher -----------------------------------------------------------
def bench_throughput(models: Path, cfg: dict, budget: Budget) -> list[dict]:
    import torch

    from workbench.lipsync.batcher import RenderBatcher
    from workbench.lipsync.musetalk.decoders import apply_speed_options

    rows = []
    avatar = make_synthetic_avatar(n_frames=cfg["avatar_frames"], frame_hw=cfg["frame_hw"], seed=0)
    variants = [("plain", False, None)]
    if cfg["compile"]:
        variants.append(("channels_last+compile", True, cfg["compile"]))
    for decoder in ("vae", "taesd"):
        for label, cl, mode in variants:
            r = load_renderer(models, cfg["device"], cfg["dtypes"][0], decoder)
            if avatar.latents is None:
                avatar.latents = r.encode_crops(avatar.crops)
            applied = apply_speed_options(r, channels_last=cl, compile_mode=mode)
            # Compilation costs a minute or more per shape: the compiled variant runs at one batch size.
            for bs in cfg["batches"] if not mode else cfg["compile_batches"]:
                if budget.left() < 0:
                    rows.append({"decoder": decoder, "variant": label, "batch": bs, "skipped": "out of time"})
                    continue
                b = RenderBatcher(r, max_batch=bs, pad_batches=bool(mode))
                n = bs * cfg["throughput_batches"]
                conds = list(np.random.default_rng(0).standard_normal((n, 50, 384)).astype(np.float32))
                idx = [k % len(avatar) for k in range(n)]
                try:
                    if cfg["warmup"]:
                        b.render(avatar, idx[: 2 * bs], conds[: 2 * bs])  # warm-up (and compilation)
                    _sync(r.device)
                    t0 = time.perf_counter()
                    b.render(avatar, idx, conds)
                    fps = n / (time.perf_counter() - t0)
                finally:
                    b.close()
                rows.append(
                    {"decoder": decoder, "variant": label, "applied": applied, "batch": bs, "fps": round(fps, 1)}
                )
                print(f"throughput {decoder} {label} b{bs}: {fps:.1f} frames/s")
            del r
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


# ---- 3. the reference MuseTalk realtime loop -----------------------------------------------------
def _shim_missing(name: str, attrs: dict) -> None:
    """An import the timed reference path never calls (torchvision.transforms.Normalize is only built
    in VAE.__init__ for encoding; einops only in training helpers): stand in when it is not installed."""
    import importlib.util

    if importlib.util.find_spec(name.split(".")[0]) is not None:
        return
    parts = name.split(".")
    for k in range(1, len(parts) + 1):
        mod = sys.modules.setdefault(".".join(parts[:k]), types.ModuleType(".".join(parts[:k])))
        if k > 1:
            setattr(sys.modules[".".join(parts[: k - 1])], parts[k - 1], mod)
    for a, v in attrs.items():
        setattr(sys.modules[name], a, v)


def bench_reference(models: Path, repo: Path, cfg: dict, budget: Budget) -> dict:
    """TMElyralab/MuseTalk's realtime_inference.py inner loop, run from its own modules."""
    import torch

    if not (repo / "musetalk" / "models" / "unet.py").is_file():
        return {"skipped": f"no MuseTalk checkout at {repo} (pass --musetalk-repo)"}

    class _Normalize:  # torchvision.transforms.Normalize's constructor, for the shim
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

    _shim_missing("torchvision.transforms", {"Normalize": _Normalize})
    _shim_missing("einops", {"rearrange": None})
    sys.path.insert(0, str(repo))
    try:
        from musetalk.models.unet import PositionalEncoding, UNet
        from musetalk.models.vae import VAE
        from musetalk.utils.utils import datagen
    finally:
        sys.path.remove(str(repo))

    device = torch.device(cfg["device"])
    fp16 = device.type == "cuda"  # the release runs half precision on GPUs (realtime_inference.py)
    vae = VAE(model_path=str(models / "sd-vae"), use_float16=fp16)
    unet = UNet(
        unet_config=str(models / "musetalkV15" / "musetalk.json"),
        model_path=str(models / "musetalkV15" / "unet.pth"),
        use_float16=fp16,
        device=device,
    )
    pe = PositionalEncoding(d_model=384)
    if fp16:
        pe, vae.vae, unet.model = pe.half().to(device), vae.vae.half().to(device), unet.model.half().to(device)
    else:
        pe, vae.vae, unet.model = pe.to(device), vae.vae.to(device), unet.model.to(device)
    timesteps = torch.tensor([0], device=device)
    dtype = unet.model.dtype
    rng = np.random.default_rng(0)
    latents = [torch.from_numpy(rng.standard_normal((1, 8, 32, 32)).astype(np.float32)).to(device) for _ in range(8)]
    rows = []
    for bs in cfg["batches"]:
        if budget.left() < 0:
            rows.append({"batch": bs, "skipped": "out of time"})
            continue
        n = bs * cfg["throughput_batches"]
        chunks = torch.from_numpy(rng.standard_normal((n, 50, 384)).astype(np.float32)).to(device, dtype)

        def loop(chunks=chunks, bs=bs, unet=unet, vae=vae) -> int:
            frames = 0
            with torch.no_grad():
                for whisper_batch, latent_batch in datagen(chunks, latents, bs, device=device):
                    audio_feature_batch = pe(whisper_batch.to(device))
                    latent_batch = latent_batch.to(device=device, dtype=unet.model.dtype)
                    pred = unet.model(latent_batch, timesteps, encoder_hidden_states=audio_feature_batch).sample
                    pred = pred.to(device=device, dtype=vae.vae.dtype)
                    frames += len(vae.decode_latents(pred))  # ends in .cpu().numpy(), as in the release
            return frames

        if cfg["warmup"]:
            loop(chunks[: 2 * bs])  # warm-up
        t0 = time.perf_counter()
        frames = loop()
        fps = frames / (time.perf_counter() - t0)
        rows.append({"batch": bs, "fps": round(fps, 1)})
        print(f"reference MuseTalk realtime loop b{bs}: {fps:.1f} frames/s")
    del unet, vae
    return {"dtype": str(dtype).replace("torch.", ""), "rows": rows}


# ---- 4. concurrent realtime sessions -------------------------------------------------------------
def run_sessions(renderer, avatar, n: int, cfg: dict, lock) -> dict:
    """n streams on one batcher, one 25 fps clock each; one reply per session with staggered starts."""
    from workbench.lipsync.batcher import RenderBatcher
    from workbench.lipsync.stream import LipSyncStream

    batcher = RenderBatcher(renderer, max_batch=max(cfg["min_batch"], min(n, cfg["max_batch"])), lock=lock)
    streams = [
        LipSyncStream(
            renderer,
            avatar,
            batch_size=cfg["stream_batch"],
            idle_prefetch=cfg["idle_prefetch"],
            render_lock=lock,
            batcher=batcher,
            name=f"s{k}",
        )
        for k in range(n)
    ]
    audio = speech_like(cfg["reply_s"], rate=REALTIME_SAMPLE_RATE, seed=1)
    stop = threading.Event()

    def clock(s) -> None:
        t0 = time.perf_counter()
        k = 0
        while not stop.is_set():
            t = t0 + k / FPS
            wait = t - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            s.next_frame(t)
            k += 1

    def voice(s, k: int) -> None:
        time.sleep(0.5 + 0.04 * k)  # staggered replies, after the idle loop is up
        step = int(DELTA_S * REALTIME_SAMPLE_RATE)
        for off in range(0, len(audio), step):
            s.push_audio(audio[off : off + step], REALTIME_SAMPLE_RATE, item_id=f"reply-{k}")
            time.sleep(DELTA_S / DELTA_SPEEDUP)
        s.end_utterance(f"reply-{k}")

    try:
        for s in streams:
            s.warm_idle(timeout=cfg["warm_timeout_s"])
        threads = [threading.Thread(target=clock, args=(s,), daemon=True) for s in streams]
        threads += [threading.Thread(target=voice, args=(s, k), daemon=True) for k, s in enumerate(streams)]
        for t in threads:
            t.start()
        deadline = time.perf_counter() + 0.5 + 0.04 * n + cfg["reply_s"] + cfg["settle_s"]
        while time.perf_counter() < deadline and any(s.speaking or not s.utterance_stats for s in streams):
            time.sleep(0.05)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(timeout=5)
        firsts = [st.first_frame_ms for s in streams for st in s.utterance_stats]
        stalls = sum(s.counters["stall"] for s in streams)
        unfinished = sum(1 for s in streams if s.speaking)
    finally:
        stop.set()
        for s in streams:
            s.close()
        batcher.close()
    ok_first = [f for f in firsts if f is not None]
    worst = max(ok_first) if len(ok_first) == n else None
    held = worst is not None and worst <= FIRST_FRAME_TARGET_MS and stalls == 0 and unfinished == 0
    return {
        "sessions": n,
        "first_frame_ms_max": None if worst is None else round(worst, 1),
        "first_frame_ms_median": round(float(np.median(ok_first)), 1) if ok_first else None,
        "stalls": stalls,
        "unfinished": unfinished,
        "batches": len(batcher.records),
        "mean_batch": round(float(np.mean([len(r.sessions) for r in batcher.records])), 2) if batcher.records else 0,
        "held": held,
    }


def bench_sessions(models: Path, cfg: dict, budget: Budget) -> dict:
    import torch

    out = {}
    avatar = make_synthetic_avatar(n_frames=cfg["avatar_frames"], frame_hw=cfg["frame_hw"], seed=0)
    for decoder in ("vae", "taesd"):
        r = load_renderer(models, cfg["device"], cfg["dtypes"][0], decoder)
        avatar.latents = r.encode_crops(avatar.crops)
        lock = threading.RLock()
        trials, best = [], 0
        for n in cfg["session_counts"]:
            if budget.left() < cfg["reply_s"] + cfg["settle_s"] + 5:
                trials.append({"sessions": n, "skipped": "out of time"})
                break
            res = run_sessions(r, avatar, n, cfg, lock)
            trials.append(res)
            print(f"sessions {decoder} x{n}: {res}")
            if not res["held"]:
                break
            best = n
        out[decoder] = {"max_sessions_held": best, "trials": trials}
        del r
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


# ---- main ----------------------------------------------------------------------------------------
def config(args) -> dict:
    if args.dry_run:
        cfg = {
            "device": "cpu",
            "size": "tiny",
            "dtypes": ["float32"],  # half precision is far slower than float32 on CPUs
            "batches": [1, 2] if args.tiny else [1, 4],
            "iters": 1,
            "warmup": 0 if args.tiny else 1,
            "throughput_batches": 1 if args.tiny else 2,
            "compile": None,
            "compile_batches": [2],
            "avatar_frames": 2,
            "frame_hw": (160, 144),
            "session_counts": [1] if args.tiny else [1, 2],
            "reply_s": 0.2 if args.tiny else 1.0,
            "settle_s": 30.0,
            "warm_timeout_s": 60.0,
            "idle_prefetch": 1,
        }
    else:
        cfg = {
            "device": "cuda",
            "size": "full",
            "dtypes": ["float16", "bfloat16"],
            "batches": [1, 4, 8, 16, 32],
            "iters": 10,
            "warmup": 3,
            "throughput_batches": 6,
            "compile": args.compile,
            "compile_batches": [16],
            "avatar_frames": 50,
            "frame_hw": (720, 1280),
            "session_counts": [1, 8, 16, 24, 32, 48, 64],
            "reply_s": 4.0,
            "settle_s": 4.0,
            "warm_timeout_s": 30.0,
            "idle_prefetch": 8,
        }
    cfg.update({"min_batch": 4, "max_batch": args.max_batch, "stream_batch": 8})
    return cfg


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny configs: the whole script in minutes")
    ap.add_argument("--tiny", action="store_true", help="with --dry-run: the smallest sizes (the test's)")
    ap.add_argument("--musetalk-repo", type=Path, default=None, help="a TMElyralab/MuseTalk checkout (reference)")
    ap.add_argument("--compile", default=None, help="also time torch.compile in this mode (e.g. max-autotune)")
    ap.add_argument("--max-batch", type=int, default=32, help="largest batch the shared batcher forms")
    ap.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget for all sections")
    ap.add_argument("--models-dir", type=Path, default=None, help="reuse random models written earlier")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--sections", default="models,throughput,reference,sessions")
    args = ap.parse_args(argv)
    import torch

    cfg = config(args)
    if cfg["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a CPU")
    budget = Budget(args.budget_s)
    sections = set(args.sections.split(","))
    result: dict = {
        "device": torch.cuda.get_device_name(0) if cfg["device"] == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dry_run": args.dry_run,
        "weights": f"random init, {cfg['size']} size, official formats (testkit.models)",
        "config": {k: v for k, v in cfg.items() if k != "frame_hw"} | {"frame_hw": list(cfg["frame_hw"])},
    }
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        models = args.models_dir or Path(tmp) / "models"
        if not (models / "musetalkV15" / "unet.pth").is_file():
            t0 = time.perf_counter()
            make_tiny_models(models, size=cfg["size"])
            make_taesd(models, size=cfg["size"])
            result["build_models_s"] = round(time.perf_counter() - t0, 1)
        # Each section ends by a cumulative share of the budget: models 25 %, throughput 50 %, reference 60 %.
        shares = {"models": 0.25, "throughput": 0.5, "reference": 0.6, "sessions": 1.0}
        for name, fn in (
            ("models", lambda b: bench_models(models, cfg, b)),
            ("throughput", lambda b: bench_throughput(models, cfg, b)),
            ("reference", lambda b: bench_reference(models, args.musetalk_repo or Path("/nonexistent"), cfg, b)),
            ("sessions", lambda b: bench_sessions(models, cfg, b)),
        ):
            if name not in sections:
                continue
            t0 = time.perf_counter()
            sub = Budget(args.budget_s * shares[name] - (time.perf_counter() - budget.t0))
            result[name] = fn(sub)
            result.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
    ref = {r["batch"]: r["fps"] for r in result.get("reference", {}).get("rows", []) if "fps" in r}
    ours = {r["batch"]: r["fps"] for r in result.get("throughput", []) if r.get("decoder") == "vae" and "fps" in r}
    result["speedup_vs_reference"] = {b: round(ours[b] / ref[b], 2) for b in ref if b in ours and ref[b] > 0}
    result["total_s"] = round(time.perf_counter() - budget.t0, 1)
    out = args.out or ROOT / "bench" / "results" / ("gpu-dry-run.json" if args.dry_run else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out, result)
    print(f"wrote {out} in {result['total_s']} s")
    return result


if __name__ == "__main__":
    main()
