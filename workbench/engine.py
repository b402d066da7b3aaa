"""The one engine behind the app, the CLI, the realtime stack and the evaluation.

It owns the settings, the avatar store and the renderers (MuseTalk when its weights are present, else the
weight-free CPU renderer; each loaded once and shared by every caller under one lock), and composes the
stages of the data path: `avatars.pipeline` (preparation) → `lipsync.loop` (audio → frames) → `media`
(the mp4). Entry points (app.py, the CLI, an evaluation worker process) build one and pass it down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from workbench import weights
from workbench.avatars.frame_memory import FrameMemory
from workbench.avatars.model import Avatar, PrepParams
from workbench.avatars.pipeline import prepare_avatar
from workbench.avatars.store import AvatarCache, AvatarInfo
from workbench.config import FPS, SAMPLES_PER_FRAME, RendererName, Settings
from workbench.faces.landmarks import get_detector
from workbench.lipsync.base import Renderer
from workbench.lipsync.cpu import CPURenderer
from workbench.lipsync.loop import RenderLoop
from workbench.lipsync.musetalk import MuseTalkRenderer
from workbench.media import load_audio, write_video
from workbench.timing import FrameTiming
from workbench.zerogpu import PREPARE_GPU_S, PREVIEW_GPU_S, RENDER_FILE_GPU_S, gpu

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


@dataclass
class RenderResult:
    path: Path | None
    n_frames: int
    timings: list[FrameTiming]
    seconds: float  # wall time of the whole render


class Engine:
    def __init__(self, settings: Settings, renderer: RendererName | None = None):
        self.settings = settings
        self.renderer_choice: RendererName = renderer or self.settings.renderer
        limit_mb = self.settings.cache_max_mb
        self.cache = AvatarCache(
            self.settings.cache_dir,
            max_bytes=limit_mb * 1_000_000 if limit_mb else None,
            frame_memory=FrameMemory(self.settings.decoded_frames_mb * 2**20),
        )
        self._renderers: dict[str, Renderer] = {}  # by resolved name: each model loaded once
        self._detectors: dict[str, object] = {}
        self._face_parser: object | None = None
        # One renderer is shared by every session; a lock keeps model calls from interleaving.
        self.render_lock = threading.RLock()

    # --- what runs --------------------------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return Path(self.settings.models_dir)

    def resolved_renderer_name(self, choice: RendererName | None = None) -> str:
        choice = choice or self.renderer_choice
        if choice == "auto":
            return "musetalk" if weights.has_musetalk(self.models_dir) else "cpu"
        return choice

    @property
    def renderer(self) -> Renderer:
        """The renderer the settings chose."""
        return self.renderer_for(self.renderer_choice)

    def renderer_for(self, choice: RendererName | None = None) -> Renderer:
        """A renderer by choice ('auto', 'cpu', 'musetalk'), loaded on first use and kept."""
        name = self.resolved_renderer_name(choice)
        if name not in self._renderers:
            with self.render_lock:
                if name not in self._renderers:
                    self._renderers[name] = self._load_renderer(name)
        return self._renderers[name]

    def reload_renderer(self) -> Renderer:
        """Choose and load the renderer again (after weights were downloaded, say)."""
        with self.render_lock:
            self._renderers.clear()
            return self.renderer

    @property
    def device(self) -> str | None:
        """The configured torch device, or None to let each model pick (CUDA when available)."""
        return None if self.settings.device == "auto" else self.settings.device

    def _load_renderer(self, name: str) -> Renderer:
        if name == "musetalk":
            dtype = None if self.settings.dtype == "auto" else self.settings.dtype
            return MuseTalkRenderer.from_models_dir(
                self.models_dir, device=self.device, dtype=dtype, decoder=self.settings.decoder
            )
        return CPURenderer(interior_style=self.settings.cpu_interior_style)

    def weights_report(self) -> weights.WeightsReport:
        return weights.check(self.models_dir)

    # --- avatars ----------------------------------------------------------------------------
    def detector(self, name: str):
        if name not in self._detectors:
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
            from workbench.faces.bisenet import FaceParser  # lazy: imports torch

            folder = self.models_dir / "face-parse-bisent"
            self._face_parser = FaceParser.from_files(
                folder / "79999_iter.pth", folder / "resnet18-5c106cde.pth", self.device
            )
        return self._face_parser

    def _vae_encoder(self):
        return getattr(self.renderer, "encode_crops", None)

    def prepare(
        self,
        source: str | Path,
        params: PrepParams | None = None,
        progress: Progress | None = None,
        *,
        owner: str | None = None,
        name: str | None = None,
        save: bool = True,
        reuse: bool = True,
    ) -> Avatar:
        """Prepare an avatar from a video, photo or frames folder, or reuse its cached copy.

        Parameters act as the loaded weights' reference does (PrepParams.effective) unless they name a version.
        `owner` (who may delete it) and `name` are recorded when it is created; `save=False` leaves the cache
        as it was (previews); `reuse=False` prepares from the source even when the cache has it (`prepare_avatar`)."""
        params = self._for_renderer(params or PrepParams())
        self._load_for_prepare(params)  # models load outside the GPU call (ZeroGPU: workbench.zerogpu)
        return self._prepare_on_gpu(Path(source), params, progress, owner=owner, name=name, save=save, reuse=reuse)

    def _for_renderer(self, params: PrepParams) -> PrepParams:
        """`params` stamped with the loaded weights' version (v1.0/v1.5) unless they name one."""
        if params.model_version is None:
            params = replace(params, model_version=getattr(self.renderer, "version", None))
        return params

    def _load_for_prepare(self, params: PrepParams) -> None:
        self.detector(params.detector)
        self.face_parser(params)
        self._vae_encoder()

    @gpu(duration=PREPARE_GPU_S)
    def _prepare_on_gpu(self, source: Path, params: PrepParams, progress: Progress | None, **record: Any) -> Avatar:
        return self._prepare_loaded(source, params, progress, **record)

    def _prepare_loaded(
        self,
        source: Path,
        params: PrepParams,
        progress: Progress | None,
        *,
        owner: str | None = None,
        name: str | None = None,
        save: bool = True,
        reuse: bool = True,
    ) -> Avatar:
        return prepare_avatar(
            source,
            params,
            self.detector(params.detector),
            vae_encoder=self._vae_encoder(),
            face_parser=self.face_parser(params),
            progress=progress,
            store=self.cache,
            owner=owner,
            name=name,
            save=save,
            reuse=reuse,
            max_side=self.settings.max_source_side,
            memory_limit_bytes=int(self.settings.prepare_memory_gb * 2**30),
        )

    def load_avatar(self, avatar_id: str) -> Avatar:
        return self.cache.load(avatar_id)

    def list_avatars(self) -> list[AvatarInfo]:
        return self.cache.list()

    def avatar_info(self, avatar_id: str) -> AvatarInfo:
        """What the store knows of an avatar without loading its arrays."""
        return self.cache.info(avatar_id)

    def delete_avatar(self, avatar_id: str) -> None:
        self.cache.delete(avatar_id)

    # --- rendering --------------------------------------------------------------------------
    def iter_frames(
        self,
        avatar: Avatar,
        audio16k: np.ndarray,
        start: int = 0,
        timings: list[FrameTiming] | None = None,
        *,
        renderer: RendererName | None = None,
        batch_size: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Lip-synced full frames for a whole clip, one per 40 ms of audio, in batches (see `RenderLoop`)."""
        loop = RenderLoop(self.renderer_for(renderer), avatar, start=start, lock=self.render_lock, exact=True)
        yield from loop.iter_file(audio16k, batch_size or self.settings.batch_size, timings)

    def render_frames(
        self,
        avatar: Avatar,
        audio16k: np.ndarray,
        start: int = 0,
        timings: list[FrameTiming] | None = None,
        **loop_options,
    ) -> list[np.ndarray]:
        return list(self.iter_frames(avatar, audio16k, start, timings, **loop_options))

    def render_file(
        self,
        avatar: Avatar,
        audio: str | Path | np.ndarray,
        out_path: str | Path,
        progress: Progress | None = None,
        *,
        renderer: RendererName | None = None,
        batch_size: int | None = None,
    ) -> RenderResult:
        """Render a 25 fps mp4 with the driving audio muxed in. `audio` is a file or 16 kHz mono samples."""
        self.renderer_for(renderer)  # loaded outside the GPU call
        return self._render_file_on_gpu(avatar, audio, out_path, progress, renderer, batch_size)

    @gpu(duration=RENDER_FILE_GPU_S)
    def _render_file_on_gpu(self, avatar, audio, out_path, progress, renderer, batch_size) -> RenderResult:
        t0 = time.perf_counter()
        audio16k = load_audio(audio) if not isinstance(audio, np.ndarray) else np.asarray(audio, np.float32)
        total = max(1, int(np.ceil(len(audio16k) / SAMPLES_PER_FRAME)))
        timings: list[FrameTiming] = []

        def frames() -> Iterator[np.ndarray]:
            it = self.iter_frames(avatar, audio16k, timings=timings, renderer=renderer, batch_size=batch_size)
            for k, frame in enumerate(it):
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
        self.renderer  # noqa: B018 - loads the models outside the GPU call
        params_list = [self._for_renderer(p) for p in params_list]
        for params in params_list:
            self._load_for_prepare(params)
        return self._preview_on_gpu(source, params_list, frame_index, audio16k, progress)

    @gpu(duration=PREVIEW_GPU_S)
    def _preview_on_gpu(self, source, params_list, frame_index, audio16k, progress) -> list[np.ndarray]:
        audio16k = np.asarray(audio16k, dtype=np.float32)
        conditions: list | None = None
        out = []
        for k, params in enumerate(params_list):
            if progress:
                progress(k / len(params_list), f"bbox_shift={params.bbox_shift}")
            avatar = self._prepare_loaded(Path(source), params, None, save=False)  # previews add no avatar
            loop = RenderLoop(self.renderer, avatar, lock=self.render_lock, exact=True)
            if conditions is None:  # the same audio conditions for every cell of the grid
                conditions = loop.conditions(audio16k, flush=True)
                if not conditions:
                    raise ValueError("the driving audio is empty")
            j = min(frame_index, len(conditions) - 1)
            out.append(loop.render([frame_index], [conditions[j]])[0])
        if progress:
            progress(1.0, "done")
        return out

    def spread_shifts(self, avatar: Avatar, n: int = 5) -> list[int]:
        """n bbox_shift values spread evenly over the avatar's measured range (always including 0)."""
        lo, hi = avatar.bbox_range
        values = sorted({int(round(v)) for v in np.linspace(lo, hi, n)} | {0})
        return values
