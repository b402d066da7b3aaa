"""Per-frame stage timestamps: written by the engine and the streaming session, read by the evaluation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from workbench import atomic

STAGES = ("audio_in", "features_ready", "rendered", "composited", "sent")


@dataclass
class FrameTiming:
    """When each stage finished for one output frame, in seconds of `time.perf_counter()`.

    `audio_in` is when the last audio sample this frame needs arrived; a stage that did not happen
    (a file render sends nothing) stays None.
    """

    frame: int
    audio_in: float | None = None
    features_ready: float | None = None
    rendered: float | None = None
    composited: float | None = None
    sent: float | None = None
    idle: bool = False  # an idle-loop frame, not driven by speech

    @classmethod
    def from_dict(cls, d: dict) -> FrameTiming:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def write_latency_log(path: Path, timings: list[FrameTiming], meta: dict | None = None) -> None:
    """JSON lines: an optional first line {"meta": …}, then one FrameTiming per line. Atomic."""
    lines = [json.dumps({"meta": meta})] if meta else []
    lines += [json.dumps(asdict(t)) for t in timings]
    atomic.write_text(Path(path), "\n".join(lines) + "\n")


def read_latency_log(path: Path) -> tuple[dict, list[FrameTiming]]:
    meta: dict = {}
    out: list[FrameTiming] = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        if "meta" in d and len(d) == 1:
            meta = d["meta"]
        else:
            out.append(FrameTiming.from_dict(d))
    return meta, out
