"""Per-stage latency and capacity on named hardware: `workbench eval stages SOURCE --audio A`.

"30 fps" claims that users cannot reproduce (MuseTalk #323, #49, #205, #376, #377, #396) usually leave out a
stage: the audio features, or the VAE decode and its copy to the host, or the paste-back, or the encode. This
measures each per frame, on this machine, with the renderer the engine loads:

- features: the renderer's audio frontend over the whole clip (Whisper for MuseTalk, the mouth-state frontend
  for the CPU renderer), per frame;
- mouth: the UNet step (MuseTalk) or the lower-face warp and drawing (CPU renderer);
- decode: the VAE decode including its copy to the host (MuseTalk; the CPU renderer has none);
- paste-back: blending the face into the full frame;
- encode: H.264 encoding of the composited frames (what a recording or a WebRTC track pays per frame).

The stages are timed by wrapping the renderer's own methods while it renders (on CUDA each timing synchronises
the device, so the split is true at a small cost). Sessions held at 25 fps: how many streams one renderer (shared
under its lock, as the app shares it) can feed in real time, floor(40 ms / (features + mouth + decode +
paste-back)); encoding runs per session on other cores and is reported beside it, not in that division.
The result goes to `<runs_dir>/stages/<stamp>.json` and `latest.json`, which the Evaluation tab shows.
"""

from __future__ import annotations

import contextlib
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from workbench import atomic
from workbench.config import FPS, SAMPLES_PER_FRAME
from workbench.evaluation.runner import machine_info
from workbench.lipsync.compositor import Compositor
from workbench.lipsync.loop import RenderLoop
from workbench.media import write_video

STAGES = ("features", "mouth", "decode", "paste_back", "encode")
# Renderer methods behind each stage, per renderer class; the Compositor's for paste-back.
_WRAPPED = {
    "mouth": ("unet_step", "_render_face"),
    "decode": ("decode_latents",),
    "paste_back": ("_paste_bank_mouth",),
}
_COMPOSITOR = ("paste", "paste_change")


@dataclass
class StageReport:
    renderer: str
    frames: int
    ms_per_frame: dict[str, float]  # stage -> ms per output frame (0 where a renderer has no such stage)
    render_ms_per_frame: float  # the renderer's whole render call per frame (mouth + decode + paste-back + rest)
    sessions_25fps: int
    hardware: dict
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def to_dict(self) -> dict:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            f"**Per-stage latency** ({self.renderer}, {self.frames} frames, {self.created}) on "
            f"{self.hardware.get('gpu') or self.hardware.get('cpu', '?')} "
            f"({self.hardware.get('cpu_count', '?')} CPUs): **{self.sessions_25fps} sessions at 25 fps**.",
            "",
            "| stage | ms per frame |",
            "|---|---:|",
        ]
        lines += [f"| {s} | {self.ms_per_frame.get(s, 0.0):.2f} |" for s in STAGES]
        lines.append(f"| (whole render call) | {self.render_ms_per_frame:.2f} |")
        return "\n".join(lines)


class _Clock:
    """Accumulates wall time per stage for methods wrapped on instances or classes, then restores them."""

    def __init__(self, sync=None):
        self.total: dict[str, float] = defaultdict(float)
        self.sync = sync or (lambda: None)
        self._undo: list = []

    def wrap(self, owner, name: str, stage: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return
        original = owner.__dict__.get(name) if isinstance(owner, type) else None

        def timed(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
                self.total[stage] += time.perf_counter() - t0

        setattr(owner, name, timed)
        self._undo.append((owner, name, original))

    def restore(self) -> None:
        for owner, name, original in reversed(self._undo):
            if isinstance(owner, type):
                setattr(owner, name, original)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)


def _cuda_sync(device):
    try:
        import torch

        if torch.cuda.is_available() and "cuda" in str(device or ""):
            return torch.cuda.synchronize
    except ImportError:
        pass
    return lambda: None


def _hardware() -> dict:
    info = machine_info()
    info["cpu"] = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


def measure_stages(engine, avatar, audio16k: np.ndarray, batch_size: int | None = None) -> StageReport:
    """Render `audio16k` on `avatar` once with the engine's renderer, timing each stage."""
    renderer = engine.renderer
    audio16k = np.asarray(audio16k, dtype=np.float32)
    n = len(audio16k) // SAMPLES_PER_FRAME
    if n < 10:
        raise ValueError("give at least 0.4 s of audio (10 frames) to time the stages")
    loop = RenderLoop(renderer, avatar, lock=engine.render_lock, exact=True)
    t0 = time.perf_counter()
    conditions = loop.conditions(audio16k, flush=True)
    features = time.perf_counter() - t0
    clock = _Clock(_cuda_sync(getattr(renderer, "device", None)))
    for stage, names in _WRAPPED.items():
        for name in names:
            if hasattr(renderer, name):
                clock.wrap(renderer, name, stage)
    for name in _COMPOSITOR:
        clock.wrap(Compositor, name, "paste_back")
    frames: list[np.ndarray] = []
    bs = batch_size or engine.settings.batch_size
    try:
        t0 = time.perf_counter()
        for k in range(0, len(conditions), bs):
            frames += loop.render(range(k, min(k + bs, len(conditions))), conditions[k : k + bs])
        render = time.perf_counter() - t0
    finally:
        clock.restore()
    with tempfile.TemporaryDirectory(prefix="stages-") as tmp:
        t0 = time.perf_counter()
        write_video(Path(tmp) / "out.mp4", frames, FPS)
        encode = time.perf_counter() - t0
    m = len(frames)
    ms = {
        "features": 1000 * features / m,
        "mouth": 1000 * clock.total.get("mouth", 0.0) / m,
        "decode": 1000 * clock.total.get("decode", 0.0) / m,
        "paste_back": 1000 * clock.total.get("paste_back", 0.0) / m,
        "encode": 1000 * encode / m,
    }
    per_frame = ms["features"] + 1000 * render / m
    return StageReport(
        renderer=renderer.describe(),
        frames=m,
        ms_per_frame={k: round(v, 3) for k, v in ms.items()},
        render_ms_per_frame=round(1000 * render / m, 3),
        sessions_25fps=int(1000 / FPS // per_frame) if per_frame > 0 else 0,
        hardware=_hardware(),
    )


def save_report(report: StageReport, runs_dir: str | Path) -> Path:
    folder = Path(runs_dir) / "stages"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = folder / f"{stamp}.json"
    atomic.write_json(path, report.to_dict())
    atomic.write_json(folder / "latest.json", report.to_dict())
    return path


def latest_report(runs_dir: str | Path) -> StageReport | None:
    import json

    p = Path(runs_dir) / "stages" / "latest.json"
    if not p.is_file():
        return None
    try:
        return StageReport(**json.loads(p.read_text()))
    except (ValueError, TypeError):
        return None
