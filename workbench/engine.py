"""The one engine behind the app, the CLI, the realtime stack and the evaluation.

It owns the settings, the avatar cache and the renderer (MuseTalk when its weights are present,
else the weight-free CPU renderer), and composes preparation, audio features and rendering.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from workbench import weights
from workbench.avatars.model import Avatar, PrepParams
from workbench.avatars.store import AvatarCache, AvatarInfo
from workbench.config import FPS, SAMPLES_PER_FRAME, RendererName, Settings, get_settings
from workbench.lipsync.base import Renderer
from workbench.media import load_audio, write_video
from workbench.timing import FrameTiming

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


@dataclass
class RenderResult:
    path: Path | None
    n_frames: int
    timings: list[FrameTiming]
    seconds: float  # wall time of the whole render


class Engine:
    def __init__(self, settings: Settings | None = None, renderer: RendererName | None = None):
        self.settings = settings or get_settings()
        self.renderer_choice: RendererName = renderer or self.settings.renderer
        self.cache = AvatarCache(self.settings.cache_dir)
        self._renderer: Renderer | None = None
        self._detectors: dict[str, object] = {}
        self._face_parser: object | None = None
        # One renderer is shared by every session; a lock keeps model calls from interleaving.
        self.render_lock = threading.RLock()

    # --- what runs --------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return Path(self.settings.models_dir)

    def resolved_renderer_name(self) -> str:
        if self.renderer_choice == "auto":
            return "musetalk" if weights.has_musetalk(self.models_dir) else "cpu"
        return self.renderer_choice

    @property
    def renderer(self) -> Renderer:
        if self._renderer is None:
            with self.render_lock:
                if self._renderer is None:
                    self._renderer = self._load_renderer(self.resolved_renderer_name())
        return self._renderer

    def reload_renderer(self) -> Renderer:
        """Choose and load the renderer again (after weights were downloaded, say)."""
        with self.render_lock:
            self._renderer = None
            return self.renderer

    @property
    def device(self) -> str | None:
        """The configured torch device, or None to let each model pick (CUDA when available)."""
        return None if self.settings.device == "auto" else self.settings.device

    def _load_renderer(self, name: str) -> Renderer:
        if name == "musetalk":
            from workbench.lipsync.musetalk import MuseTalkRenderer

            dtype = None if self.settings.dtype == "auto" else self.settings.dtype
            return MuseTalkRenderer.from_models_dir(self.models_dir, device=self.device, dtype=dtype)
        from workbench.lipsync.cpu import CPURenderer

        return CPURenderer()

    def weights_report(self) -> weights.WeightsReport:
        return weights.check(self.models_dir)

    # --- avatars ----------------------------------------------------------------------------
    def detector(self, name: str):
        if name not in self._detectors:
            from workbench.faces.landmarks import get_detector

            self._detectors[name] = get_detector(name, self.models_dir, device=self.device)
        return self._detectors[name]

    def face_parser(self, params: PrepParams):
        """BiSeNet when asked for, or on 'auto' when its weights are present; else None (landmark masks)."""
        if params.mask_source == "landmarks":
            return None
        report = weights.check(self.models_dir, ["face-parse-bisent"])
        if params.mask_source == "auto" and not report.ok(["face-parse-bisent"]):
            return None
        report.require(["face-parse-bisent"])  # asked for bisenet explicitly: say what is missing
        if self._face_parser is None:
            from workbench.faces.bisenet import FaceParser

            folder = self.models_dir / "face-parse-bisent"
            self._face_parser = FaceParser.from_files(
                folder / "79999_iter.pth", folder / "resnet18-5c106cde.pth", self.device
            )
        return self._face_parser

    def _vae_encoder(self):
        return getattr(self.renderer, "encode_crops", None)

    def prepare(self, source: str | Path, params: PrepParams | None = None, progress: Progress | None = None) -> Avatar:
        """Prepare an avatar from a video, photo or frames folder, or reuse its cached copy.

        Parameters act as the loaded weights' reference does (PrepParams.effective) unless they name a version.
        """
        params = params or PrepParams()
        if params.model_version is None:
            params = replace(params, model_version=getattr(self.renderer, "version", None))
        return self.cache.get_or_prepare(
            Path(source),
            params,
            detector=self.detector(params.detector),
            vae_encoder=self._vae_encoder(),
            face_parser=self.face_parser(params),
            progress=progress,
        )

    def load_avatar(self, avatar_id: str) -> Avatar:
        return self.cache.load(avatar_id)

    def list_avatars(self) -> list[AvatarInfo]:
        return self.cache.list()

    def delete_avatar(self, avatar_id: str) -> None:
        self.cache.delete(avatar_id)

    # --- rendering --------------------------------------------------------------------------
    def iter_frames(
        self,
        avatar: Avatar,
        audio16k: np.ndarray,
        start: int = 0,
        timings: list[FrameTiming] | None = None,
    ) -> Iterator[np.ndarray]:
        """Lip-synced full frames for a whole clip, one per 40 ms of audio, in batches.

        The audio goes through the renderer's frontend one batch of frames at a time, as a stream would, so
        each frame's timestamps measure what it took from its audio being in to its pixels being out (the
        frames are the same as from the whole file at once: frontends guarantee it).
        """
        audio16k = np.asarray(audio16k, dtype=np.float32)
        renderer = self.renderer
        frontend = renderer.file_frontend()
        bs = self.settings.batch_size
        step = bs * SAMPLES_PER_FRAME
        pending: list[tuple[object, float, float]] = []  # (condition, audio in, features ready)
        produced = 0

        def feed(chunk: np.ndarray | None) -> None:
            t_in = time.perf_counter()
            with self.render_lock:
                conds = frontend.flush() if chunk is None else frontend.push(chunk)
            t_feat = time.perf_counter()
            pending.extend((c, t_in, t_feat) for c in conds)

        def render(batch: list[tuple[object, float, float]]) -> list[np.ndarray]:
            nonlocal produced
            idx = [avatar.loop_index(start + produced + k) for k in range(len(batch))]
            with self.render_lock:
                frames = renderer.render(avatar, idx, [c for c, _, _ in batch])
            t_done = time.perf_counter()
            if timings is not None:
                timings.extend(
                    FrameTiming(
                        frame=produced + k, audio_in=t_in, features_ready=t_feat, rendered=t_done, composited=t_done
                    )
                    for k, (_, t_in, t_feat) in enumerate(batch)
                )
            produced += len(batch)
            return frames

        for off in range(0, len(audio16k), step):
            feed(audio16k[off : off + step])
            while len(pending) >= bs:
                batch, pending[:] = pending[:bs], pending[bs:]
                yield from render(batch)
        feed(None)
        while pending:
            batch, pending[:] = pending[:bs], pending[bs:]
            yield from render(batch)

    def render_frames(
        self,
        avatar: Avatar,
        audio16k: np.ndarray,
        start: int = 0,
        timings: list[FrameTiming] | None = None,
    ) -> list[np.ndarray]:
        return list(self.iter_frames(avatar, audio16k, start, timings))

    def render_file(
        self,
        avatar: Avatar,
        audio: str | Path | np.ndarray,
        out_path: str | Path,
        progress: Progress | None = None,
    ) -> RenderResult:
        """Render a 25 fps mp4 with the driving audio muxed in. `audio` is a file or 16 kHz mono samples."""
        t0 = time.perf_counter()
        audio16k = load_audio(audio) if not isinstance(audio, np.ndarray) else np.asarray(audio, np.float32)
        total = max(1, int(np.ceil(len(audio16k) / SAMPLES_PER_FRAME)))
        timings: list[FrameTiming] = []

        def frames() -> Iterator[np.ndarray]:
            for k, frame in enumerate(self.iter_frames(avatar, audio16k, timings=timings)):
                if progress and k % 5 == 0:
                    progress(k / total, f"frame {k}/{total}")
                yield frame

        out = Path(out_path)
        write_video(out, frames(), FPS, audio16k=audio16k)
        if progress:
            progress(1.0, "done")
        return RenderResult(path=out, n_frames=len(timings), timings=timings, seconds=time.perf_counter() - t0)

    def preview(
        self,
        source: str | Path,
        params_list: Sequence[PrepParams],
        frame_index: int,
        audio16k: np.ndarray,
        progress: Progress | None = None,
    ) -> list[np.ndarray]:
        """One rendered frame per parameter set: the bbox_shift tuning grid.

        Each is made exactly as real-time output is: the avatar prepared with those parameters (detections
        come from the cache), the renderer's real audio conditions at `frame_index`, the same compositor.
        """
        renderer = self.renderer
        with self.render_lock:
            conditions = renderer.file_frontend().process(np.asarray(audio16k, dtype=np.float32))
        if not conditions:
            raise ValueError("the driving audio is empty")
        cond = conditions[min(frame_index, len(conditions) - 1)]
        out = []
        for k, params in enumerate(params_list):
            if progress:
                progress(k / len(params_list), f"bbox_shift={params.bbox_shift}")
            avatar = self.prepare(source, params)
            i = avatar.loop_index(frame_index)
            with self.render_lock:
                out.append(renderer.render(avatar, [i], [cond])[0])
        if progress:
            progress(1.0, "done")
        return out

    def spread_shifts(self, avatar: Avatar, n: int = 5) -> list[int]:
        """n bbox_shift values spread evenly over the avatar's measured range (always including 0)."""
        lo, hi = avatar.bbox_range
        values = sorted({int(round(v)) for v in np.linspace(lo, hi, n)} | {0})
        return values
