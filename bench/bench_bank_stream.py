"""Mouth bank: does the realtime stream keep runs of the person's own frames as the file path does?

    .venv/bin/python bench/bench_bank_stream.py [--avatar talk4] [--sweep]

A real talking video speaks with its own mouths (`workbench/lipsync/cpu/bank.py`). Each output frame's
mouth comes from one source frame; a *run* is a stretch of output frames whose source frames are neighbours
(|step| <= 1), so the mouth texture only moves as the video moved. Measured per path, on the same avatar and
the same driving audio (eng.wav 20-28 s, not the avatar's own speech):

* file: `RenderLoop.iter_file`, batches of 8 (the engine's default), the path searched per call;
* stream: `LipSyncStream` with the real renderer, idle prefetch and the reply's audio pushed in 100 ms deltas,
  either all at once (`burst`, as the Realtime API delivers faster than real time) or at real time (`paced`);
  `--legacy` also runs the stream as it was before the look-ahead (one shared carry, no look-ahead).

Reported: the consecutive-frame share (the share of output frames whose source is a neighbour of the previous
one), the mean shape mismatch of the chosen mouths (|source opening - target| in the avatar's own range), the
render calls and their sizes, and sync: the correlation of the chosen frames' own measured opening (their
landmarks) with the audio envelope and its best lag. `--sweep` tries jump costs and candidate sets on the
design avatars (talk1, talk2) through the file path and a one-frame-per-call stream with look-ahead
(selection only, no pixels), for choosing `BankParams`' defaults.

Writes bench/results/bank-stream.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workbench import atomic  # noqa: E402
from workbench.avatars.model import Avatar, PrepParams  # noqa: E402
from workbench.config import SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402
from workbench.lipsync.cpu import bank as mouth_bank  # noqa: E402
from workbench.lipsync.cpu.bank import BankParams  # noqa: E402
from workbench.lipsync.cpu.renderer import CPURenderer  # noqa: E402
from workbench.lipsync.loop import RenderLoop  # noqa: E402

SAMPLES = ROOT.parent / "shared" / "samples"
RESULTS = ROOT / "bench" / "results" / "bank-stream.json"
AUDIO_SPAN = (20.0, 28.0)


def load_avatar(name: str) -> Avatar:
    from workbench.avatars.pipeline import prepare_avatar
    from workbench.faces.landmarks import get_detector

    path = SAMPLES / f"{name}.mp4" if name in ("sun", "yongen") else SAMPLES / "calibration" / f"{name}.mp4"
    return prepare_avatar(path, PrepParams(), get_detector("dlib"))


def driving_audio() -> np.ndarray:
    import soundfile as sf

    audio, sr = sf.read(SAMPLES / "eng.wav", dtype="float32")
    assert sr == SAMPLE_RATE
    return audio[int(AUDIO_SPAN[0] * sr) : int(AUDIO_SPAN[1] * sr)]


class Recorder:
    """Wraps `MouthBank.select` to record each call made with a sequence track (speech, not idle)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], list[int], int]] = []  # (avatar frames, chosen, look-ahead length)
        self._orig = mouth_bank.MouthBank.select
        self._lock = threading.Lock()

    def __enter__(self) -> Recorder:
        rec, orig = self, self._orig

        def select(bank, frame_indices, states, lookahead=(), track=None):
            out = orig(bank, frame_indices, states, lookahead, track)
            if track is not None or getattr(_SPEECH, "on", False):
                with rec._lock:
                    rec.calls.append((list(frame_indices), list(out), len(lookahead)))
            return out

        mouth_bank.MouthBank.select = select
        return self

    def __exit__(self, *exc) -> None:
        mouth_bank.MouthBank.select = self._orig


def run_stats(chosen: list[int]) -> float:
    c = np.asarray(chosen)
    return float(np.mean(np.abs(np.diff(c)) <= 1)) if len(c) > 1 else float("nan")


def envelope(audio: np.ndarray, n: int) -> np.ndarray:
    a = np.pad(audio, (0, max(0, n * SAMPLES_PER_FRAME - len(audio))))[: n * SAMPLES_PER_FRAME]
    return np.sqrt(np.mean(a.reshape(n, SAMPLES_PER_FRAME) ** 2, axis=1))


def sync(bank, chosen: list[int], audio: np.ndarray) -> tuple[int, float]:
    m = bank.raw_open[np.asarray(chosen)]
    e = envelope(audio, len(m))
    best, corr = 0, -2.0
    for lag in range(-5, 6):
        a, b = (m[lag:], e[: len(e) - lag]) if lag >= 0 else (m[:lag], e[-lag:])
        c = float(np.corrcoef(a, b)[0, 1])
        if c > corr:
            best, corr = lag, c
    return best, corr


def summary(bank, chosen: list[int], states, audio: np.ndarray, calls: list) -> dict:
    n = min(len(chosen), len(states))
    tgt = np.array([s.open for s in states[:n]])
    mismatch = float(np.mean(np.abs(bank.open[np.asarray(chosen[:n])] - np.clip(tgt, 0, 1))))
    lag, corr = sync(bank, chosen, audio)
    sizes = [len(f) for f, _, _ in calls]
    return {
        "frames": len(chosen),
        "consecutive_share": run_stats(chosen),
        "shape_mismatch": mismatch,
        "sync_best_lag": lag,
        "sync_corr": corr,
        "calls": len(calls),
        "calls_of_one_frame": int(sum(s == 1 for s in sizes)),
        "mean_lookahead": float(np.mean([la for _, _, la in calls])) if calls else 0.0,
    }


def file_path(r: CPURenderer, avatar: Avatar, audio: np.ndarray) -> tuple[list[int], list]:
    with Recorder() as rec:
        loop = RenderLoop(r, avatar, exact=True)
        for _ in loop.iter_file(audio, 8):
            pass
    return [c for _, out, _ in rec.calls for c in out], rec.calls


_SPEECH = threading.local()


class _Legacy(CPURenderer):
    """The renderer as the stream used it before: no per-sequence track (one carry shared with the idle
    renders) and no look-ahead. Speech calls are marked so the recorder can tell them from idle ones."""

    def render(self, avatar, frame_indices, conditions, lookahead=(), sequence=None):
        _SPEECH.on = sequence is not None
        try:
            return super().render(avatar, frame_indices, conditions)
        finally:
            _SPEECH.on = False


def stream_path(r: CPURenderer, avatar: Avatar, audio: np.ndarray, paced: bool) -> tuple[list[int], list]:
    import soxr

    from workbench.lipsync.stream import LipSyncStream

    a24 = soxr.resample(audio, SAMPLE_RATE, 24_000)
    pcm = np.round(np.clip(a24 / max(np.abs(a24).max(), 1e-6) * 0.7, -1, 1) * 32767).astype(np.int16)
    with Recorder() as rec:
        stream = LipSyncStream(r, avatar, name="bank-bench")
        try:
            stream.warm_idle(timeout=120)
            rec.calls.clear()
            t0 = time.perf_counter()
            for k, i in enumerate(range(0, len(pcm), 2400)):
                if paced:
                    time.sleep(max(0.0, t0 + 0.1 * k - time.perf_counter()))
                stream.push_audio(pcm[i : i + 2400], 24_000, item_id="reply")
            stream.end_utterance()
            seen, speech = False, 0
            for _ in range(20000):
                f = stream.next_frame()
                seen |= f.kind == "speech"
                speech += f.kind == "speech"
                if seen and not stream.speaking:
                    break
                time.sleep(0.04 if paced else 0.002)
        finally:
            stream.close()
    return [c for _, out, _ in rec.calls for c in out], rec.calls


def select_only(
    bank_params: BankParams, avatar: Avatar, states, per_call: int, lookahead: bool
) -> tuple[list[int], list]:
    """The path as a renderer would choose it, without pixels: calls of `per_call` frames, with or without the
    pending conditions as look-ahead."""
    r = CPURenderer(bank_params=bank_params)
    seq = r.new_sequence()
    idx = [avatar.loop_index(k) for k in range(len(states))]
    out, calls = [], []
    for b in range(0, len(states), per_call):
        look = list(zip(idx[b + per_call :], states[b + per_call :], strict=True)) if lookahead else []
        got = r.source_frames(avatar, idx[b : b + per_call], states[b : b + per_call], look, seq)
        calls.append((idx[b : b + per_call], got, min(len(look), bank_params.lookahead)))
        out += got
    return out, calls


def sweep(audio: np.ndarray) -> dict:
    from workbench.lipsync.cpu.frontend import MouthFrontend

    states = MouthFrontend().process(audio)
    res = {}
    for name in ("talk1", "talk2"):
        avatar = load_avatar(name)
        rows = []
        for jump in (0.5, 1.0, 2.0, 3.0):
            for cands in (8, 16, 32):
                for nb in (False, True):
                    for look in (0, 4, 8, 12):
                        prm = BankParams(jump_cost=jump, candidates=cands, neighbours=nb, lookahead=look)
                        bank = CPURenderer(bank_params=prm)._rig(avatar).bank
                        f, fc = select_only(prm, avatar, states, 8, False)
                        s, sc = select_only(prm, avatar, states, 1, True)
                        rows.append(
                            {
                                "jump_cost": jump,
                                "candidates": cands,
                                "neighbours": nb,
                                "lookahead": look,
                                "file": summary(bank, f, states, audio, fc),
                                "stream_1": summary(bank, s, states, audio, sc),
                            }
                        )
        res[name] = rows
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--avatar", default="talk4", help="a real talking face (held out: talk3, talk4, talk5)")
    ap.add_argument("--sweep", action="store_true", help="jump cost / candidates / look-ahead on talk1, talk2")
    ap.add_argument("--legacy", action="store_true", help="also the stream as it was before (no look-ahead)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    audio = driving_audio()
    prev = atomic_read(args.out)
    if args.sweep:
        prev["sweep"] = sweep(audio)
        atomic.write_json(args.out, prev)
        for name, rows in prev["sweep"].items():
            print(name)
            for r in rows:
                print(
                    f"  jump {r['jump_cost']:.1f} cand {r['candidates']:2d} nb {int(r['neighbours'])} "
                    f"look {r['lookahead']:2d}: file {r['file']['consecutive_share']:.3f} / "
                    f"{r['file']['shape_mismatch']:.3f}   stream-1 {r['stream_1']['consecutive_share']:.3f} / "
                    f"{r['stream_1']['shape_mismatch']:.3f}"
                )
        return
    from workbench.lipsync.cpu.frontend import MouthFrontend

    avatar = load_avatar(args.avatar)
    states = MouthFrontend().process(audio)
    r = CPURenderer()
    bank = r._rig(avatar).bank
    out = {"avatar": args.avatar, "audio": f"eng.wav {AUDIO_SPAN[0]:.0f}-{AUDIO_SPAN[1]:.0f} s"}
    out["params"] = vars(r.bank_params) if hasattr(r.bank_params, "__dict__") else str(r.bank_params)
    f, fc = file_path(r, avatar, audio)
    out["file"] = summary(bank, f, states, audio, fc)
    for mode in ("burst", "paced"):
        s, sc = stream_path(CPURenderer(), avatar, audio, paced=mode == "paced")
        out[f"stream_{mode}"] = summary(bank, s, states, audio, sc)
        if args.legacy:
            s, sc = stream_path(_Legacy(bank_params=BankParams(lookahead=0)), avatar, audio, paced=mode == "paced")
            out[f"legacy_stream_{mode}"] = summary(bank, s, states, audio, sc)
    out["loadavg"] = os.getloadavg()
    prev.setdefault("runs", {})[args.avatar] = out
    atomic.write_json(args.out, prev)
    for k, v in out.items():
        if isinstance(v, dict) and "consecutive_share" in v:
            print(
                f"{k:22s} consecutive {v['consecutive_share']:.3f}  mismatch {v['shape_mismatch']:.3f}  "
                f"sync lag {v['sync_best_lag']:+d} corr {v['sync_corr']:.2f}  calls {v['calls']} "
                f"(1-frame {v['calls_of_one_frame']}, look-ahead {v['mean_lookahead']:.1f})"
            )


def atomic_read(path: Path) -> dict:
    import json

    return json.loads(path.read_text()) if path.exists() else {}


if __name__ == "__main__":
    main()
