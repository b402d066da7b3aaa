"""The one render loop: audio → the renderer's frontend → per-frame conditions → batched renders.

File rendering (`Engine.iter_frames`), the tuning previews (`Engine.preview`) and the stream
(`LipSyncStream`, one `RenderLoop` per reply) all turn audio into frames through this class, so the
three can never disagree on which avatar frame a condition is rendered on, or on locking.

Frame j of the audio is rendered on avatar frame `avatar.loop_index(start + j)`: `start` is the body
position the audio begins at (0 for a file; the idle loop's position for a reply in a stream).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from workbench.avatars.model import Avatar
from workbench.config import SAMPLES_PER_FRAME
from workbench.lipsync.base import Renderer
from workbench.timing import FrameTiming


class RenderLoop:
    """One audio stream's way from 16 kHz samples to composited frames.

    `conditions` feeds audio to the renderer's incremental frontend; `render` renders frames j of the
    stream from their conditions. Model calls run under `lock`, which one renderer's users share, so
    calls from several streams never interleave inside a model.
    """

    def __init__(
        self,
        renderer: Renderer,
        avatar: Avatar,
        *,
        start: int = 0,
        lock: AbstractContextManager[Any] | None = None,
        exact: bool = False,
    ):
        """`exact`: the renderer's whole-file frontend (for MuseTalk the reference's 30 s segments) instead of
        the streaming one; files, previews and evaluation cases use it, the realtime stream does not."""
        self.renderer = renderer
        self.avatar = avatar
        self.start = int(start)
        self.lock = lock if lock is not None else threading.Lock()
        self.frontend = renderer.file_frontend() if exact else renderer.new_frontend()
        self.lookahead_frames = int(getattr(self.frontend, "lookahead_frames", 0))
        # The renderer's memory of this sequence (the CPU renderer's mouth-bank track), never shared.
        self.sequence = renderer.new_sequence(exact=exact)

    def conditions(self, audio16k: np.ndarray | None, flush: bool = False) -> list[Any]:
        """Conditions of every frame whose audio (with look-ahead) is now complete; `flush` ends the stream."""
        with self.lock:
            out = [] if audio16k is None or len(audio16k) == 0 else self.frontend.push(audio16k)
            if flush:
                out += self.frontend.flush()
        return out

    def body(self, j: int) -> int:
        """The avatar frame that frame j of this stream is rendered on."""
        return self.avatar.loop_index(self.start + j)

    def render(
        self, js: Sequence[int], conditions: Sequence[Any], lookahead: Sequence[tuple[int, Any]] = ()
    ) -> list[np.ndarray]:
        """Full composited frames for frames `js` of this stream from their conditions. `lookahead`: (j,
        condition) of frames that follow, which a renderer with a sequence may plan with (not rendered)."""
        indices = [self.body(j) for j in js]
        with self.lock:
            if self.sequence is None:
                return self.renderer.render(self.avatar, indices, list(conditions))
            ahead = [(self.body(j), c) for j, c in lookahead]
            return self.renderer.render(self.avatar, indices, list(conditions), lookahead=ahead, sequence=self.sequence)

    def iter_file(
        self, audio16k: np.ndarray, batch_size: int, timings: list[FrameTiming] | None = None
    ) -> Iterator[np.ndarray]:
        """Every frame of a whole clip, one per 40 ms of audio, rendered `batch_size` at a time.

        The audio goes in one batch of frames at a time, as a stream's would, so each frame's timestamps
        measure what it took from its audio being in to its pixels being out (frontends guarantee the
        frames equal those of the whole file at once).
        """
        audio16k = np.asarray(audio16k, dtype=np.float32)
        bs = max(1, int(batch_size))
        pending: list[tuple[Any, float, float]] = []  # (condition, audio in, features ready)
        produced = 0

        def feed(chunk: np.ndarray | None) -> None:
            t_in = time.perf_counter()
            conds = self.conditions(chunk, flush=chunk is None)
            t_feat = time.perf_counter()
            pending.extend((c, t_in, t_feat) for c in conds)

        def render(batch: list[tuple[Any, float, float]]) -> list[np.ndarray]:
            nonlocal produced
            frames = self.render(range(produced, produced + len(batch)), [c for c, _, _ in batch])
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

        for off in range(0, len(audio16k), bs * SAMPLES_PER_FRAME):
            feed(audio16k[off : off + bs * SAMPLES_PER_FRAME])
            while len(pending) >= bs:
                batch, pending[:] = pending[:bs], pending[bs:]
                yield from render(batch)
        feed(None)
        while pending:
            batch, pending[:] = pending[:bs], pending[bs:]
            yield from render(batch)
