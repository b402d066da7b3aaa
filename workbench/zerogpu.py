"""Hugging Face ZeroGPU: a GPU is attached per call to functions decorated with `@spaces.GPU`.

`gpu(duration=...)` is that decorator when the `spaces` package is installed (it is preinstalled on
Spaces and itself a no-op off ZeroGPU) and does nothing otherwise, so `spaces` is not a dependency.
Models must be loaded outside the decorated calls (the engine does), because on ZeroGPU the call runs
in a forked worker whose state is thrown away afterwards.

A ZeroGPU Space cannot hold a continuous stream: a GPU is lent for one call of bounded duration, while
a realtime conversation renders 25 frames a second for as long as it lasts. There the realtime chat runs
the CPU renderer (or the Space needs dedicated GPU hardware); `on_zerogpu()` tells which.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

# Seconds of GPU a call may hold (ZeroGPU's default is 60; longer requests wait longer in its queue).
PREPARE_GPU_S = 120  # detection + parsing + VAE encode of up to a few hundred frames
PREVIEW_GPU_S = 60  # the bbox_shift grid: a handful of preparations from cached detections + one frame each
RENDER_FILE_GPU_S = 120  # a clip of up to a minute (the upload limit) at well over real time

ZEROGPU_REALTIME_NOTE = (
    "This Space runs on ZeroGPU, which lends a GPU per call for a bounded time and cannot hold a "
    "continuous 25 fps stream: the realtime chat uses the CPU renderer here. For MuseTalk in realtime, "
    "run the Space on dedicated GPU hardware."
)


def on_zerogpu() -> bool:
    """True on a ZeroGPU Space (the platform sets SPACES_ZERO_GPU=true)."""
    return os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true", "yes")


def gpu(duration: int) -> Callable[[F], F]:
    """`spaces.GPU(duration=duration)` when `spaces` is importable, else the identity decorator."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
