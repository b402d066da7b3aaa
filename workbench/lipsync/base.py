"""The renderer contract. The engine, the realtime stack and the evaluation see only this.

A renderer turns audio into per-frame conditions (through an incremental `AudioFrontend`) and
conditions into full composited frames. The MuseTalk renderer's conditions are Whisper feature
windows; the CPU renderer's are mouth states. Both paste back through the avatar's blending mask.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.avatars.model import Avatar


class AudioFrontend(ABC):
    """Incremental audio → per-frame conditions.

    `push` takes float32 16 kHz mono audio in chunks of any size and returns the conditions of every
    frame whose look-ahead is now complete; `flush` ends the stream and returns the rest. Pushing a
    file in any chunking and flushing gives the same conditions as pushing it whole.
    """

    lookahead_frames: int = 0  # frames of audio needed beyond a frame before it can be emitted

    @abstractmethod
    def push(self, audio: np.ndarray) -> list[Any]: ...

    @abstractmethod
    def flush(self) -> list[Any]: ...

    def process(self, audio: np.ndarray) -> list[Any]:
        """Whole-file form: the same computation as pushing every chunk then flushing."""
        return self.push(audio) + self.flush()


class Renderer(ABC):
    name: str = "base"
    # Conditions beyond a render call that `render(..., lookahead=)` can use (0: the renderer takes none).
    lookahead_frames: int = 0

    def new_sequence(self, exact: bool = False) -> Any:
        """State a renderer keeps between the calls of one output sequence (a file, a stream's reply), passed
        back as `render(..., sequence=)`; None (the default) means it keeps none and takes neither keyword.
        `exact`: the sequence is a file, a preview or an evaluation case (`RenderLoop(exact=True)`), not a
        realtime stream, so a renderer may spend more per frame on it."""
        return None

    @abstractmethod
    def new_frontend(self) -> AudioFrontend:
        """A fresh frontend for one audio stream."""

    def file_frontend(self) -> AudioFrontend:
        """The frontend for whole files (rendering, previews, evaluation cases): the model's reference
        computation where that differs from streaming; by default the streaming one."""
        return self.new_frontend()

    @abstractmethod
    def silence_condition(self) -> Any:
        """The condition of one frame of silence (closed mouth), used for the idle face."""

    @abstractmethod
    def render(self, avatar: Avatar, frame_indices: Sequence[int], conditions: Sequence[Any]) -> list[np.ndarray]:
        """Full composited frames (H, W, 3) uint8 BGR, one per (avatar frame index, condition)."""

    def describe(self) -> str:
        return self.name

    def describe_for(self, avatar: Avatar) -> str:
        """What actually runs for `avatar` (a renderer may switch a part off for some avatars)."""
        return self.describe()
