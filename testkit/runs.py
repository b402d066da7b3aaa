"""Inputs for evaluation-run tests."""

from __future__ import annotations

from pathlib import Path

from workbench.timing import FrameTiming, write_latency_log


def session_latency_log(path: Path, n_frames: int = 40) -> Path:
    """A streaming session's latency log (stages 5, 35, 37 and 38 ms after each frame's audio): a case that needs no
    media decoding, so the tests that run suites stay quick."""
    timings = [
        FrameTiming(
            frame=k,
            audio_in=k / 25,
            features_ready=k / 25 + 0.005,
            rendered=k / 25 + 0.035,
            composited=k / 25 + 0.037,
            sent=k / 25 + 0.038,
        )
        for k in range(n_frames)
    ]
    write_latency_log(path, timings, meta={"renderer": "cpu"})
    return path
