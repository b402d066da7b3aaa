"""The default example avatar, prepared in the background when the app starts.

A visitor of a fresh deployment (a Space that just started, with an empty cache) should find an avatar ready
to talk instead of an empty chat tab. The app prepares the bundled `examples/yongen.mp4` once, with the
preparation tab's defaults (so pressing *Prepare* on it later is a cache hit); the banner shows its progress
and the chat tab selects it when it is ready. When it is cached already (a restart with persistent /data),
this only loads its metadata.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from workbench.avatars.model import PrepParams

log = logging.getLogger(__name__)

EXAMPLE_MAX_FRAMES = 100  # the preparation tab's default: 4 s at 25 fps, ping-pong looped by the idle face


@dataclass(frozen=True)
class WarmupState:
    status: str  # "waiting", "preparing", "ready" or "failed"
    source: str  # file name of the example
    fraction: float = 0.0
    message: str = ""
    avatar_id: str | None = None
    seconds: float | None = None  # from start to ready (or failure)

    @property
    def busy(self) -> bool:
        return self.status in ("waiting", "preparing")


class ExampleWarmup:
    """Prepares one avatar on a daemon thread and tells its progress. Thread-safe."""

    def __init__(self, engine, source: Path, params: PrepParams | None = None):
        self.engine = engine
        self.source = Path(source)
        self.params = params or PrepParams(max_frames=EXAMPLE_MAX_FRAMES)
        self._state = WarmupState("waiting", self.source.name)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    def state(self) -> WarmupState:
        with self._lock:
            return self._state

    def _set(self, **changes) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _progress(self, fraction: float, message: str = "") -> None:
        self._set(status="preparing", fraction=max(0.0, min(1.0, float(fraction))), message=message)

    def start(self) -> ExampleWarmup:
        if self._thread is None:
            self._t0 = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="example-avatar", daemon=True)
            self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> WarmupState:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state()

    def _run(self) -> None:
        self._progress(0.0, "starting")
        try:
            avatar = self.engine.prepare(self.source, self.params, progress=self._progress)
        except Exception as e:  # shown in the banner; the app keeps serving (a visitor can still upload)
            log.exception("could not prepare the example avatar from %s", self.source)
            self._set(status="failed", message=f"{type(e).__name__}: {e}", seconds=time.monotonic() - self._t0)
            return
        took = time.monotonic() - self._t0
        self._set(
            status="ready", fraction=1.0, message=f"{len(avatar)} frames", avatar_id=avatar.avatar_id, seconds=took
        )
        log.info("example avatar %s ready in %.1f s", avatar.avatar_id, took)
