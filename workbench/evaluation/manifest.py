"""Test-suite manifests (YAML): which cases to evaluate and how.

A case is one of
- generated: an avatar source and a driving audio; the engine prepares and renders it, then it is scored;
- reference: an existing video (ground truth, another model's output) scored as it is, with its own audio
  track or a separate audio file;
- latency_log: a streaming session's latency log (JSON lines), measured for latency only.

Relative paths resolve against the manifest's folder. See suites/example.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.avatars.model import PrepParams
from workbench.config import ParsingMode, RendererName
from workbench.evaluation.errors import ManifestError

MetricName = Literal["landmark_sync", "syncnet", "latency"]
ALL_METRICS: tuple[str, ...] = ("landmark_sync", "syncnet", "latency")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    description: str = ""
    audio_shift_frames: int = Field(
        0,
        ge=-15,
        le=15,
        description="shift the audio by this many frames before scoring (positive: earlier); a control for the metrics",
    )
    max_offset: int = Field(15, ge=1, le=30)

    @field_validator("id")
    @classmethod
    def _check_id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                f"case id {v!r} must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return v


class GeneratedCase(_Case):
    kind: Literal["generated"] = "generated"
    source: Path  # avatar video or photo
    audio: Path  # driving speech
    renderer: RendererName = "auto"
    bbox_shift: int = PrepParams.bbox_shift
    extra_margin: int = PrepParams.extra_margin
    parsing_mode: ParsingMode = PrepParams.parsing_mode
    batch_size: int | None = Field(None, ge=1, le=64)
    max_frames: int | None = Field(None, ge=1, description="avatar frames taken from the source")
    audio_start: float = Field(0.0, ge=0, description="seconds skipped at the start of the driving audio")
    max_seconds: float | None = Field(None, gt=0, description="seconds of driving audio rendered")
    metrics: tuple[MetricName, ...] = ALL_METRICS


class ReferenceCase(_Case):
    kind: Literal["reference"] = "reference"
    video: Path
    audio: Path | None = None  # None: the video's own audio track
    start: float = Field(0.0, ge=0)
    max_seconds: float | None = Field(None, gt=0)
    metrics: tuple[MetricName, ...] = ("landmark_sync", "syncnet")

    @model_validator(mode="after")
    def _no_latency(self) -> ReferenceCase:
        if "latency" in self.metrics:
            raise ValueError("a reference case has no frame timings; use a latency_log case for latency")
        return self


class LatencyLogCase(_Case):
    kind: Literal["latency_log"] = "latency_log"
    log: Path
    metrics: tuple[MetricName, ...] = ("latency",)


Case = Annotated[GeneratedCase | ReferenceCase | LatencyLogCase, Field(discriminator="kind")]


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    cases: list[Case] = Field(min_length=1)
    root: Path = Field(Path("."), description="the manifest's folder; set by load_suite")

    @model_validator(mode="after")
    def _unique_ids(self) -> Suite:
        seen: set[str] = set()
        dup = [c.id for c in self.cases if c.id in seen or seen.add(c.id)]
        if dup:
            raise ValueError(f"duplicate case ids: {', '.join(sorted(set(dup)))}")
        return self

    def resolve(self, p: Path | None) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() else (self.root / p).resolve()

    def files_of(self, case: GeneratedCase | ReferenceCase | LatencyLogCase) -> dict[str, Path]:
        names = {"generated": ("source", "audio"), "reference": ("video", "audio"), "latency_log": ("log",)}[case.kind]
        return {n: self.resolve(getattr(case, n)) for n in names if getattr(case, n) is not None}

    def missing_files(self) -> list[str]:
        """'case: field -> path' for every file a case names that does not exist."""
        out = []
        for c in self.cases:
            for name, p in self.files_of(c).items():
                if not p.exists():
                    out.append(f"{c.id}: {name} -> {p}")
        return out


def parse_suite(data: dict, root: str | Path) -> Suite:
    if not isinstance(data, dict):
        raise ManifestError("a suite manifest must be a YAML mapping with 'name' and 'cases'")
    try:
        return Suite(**{**data, "root": Path(root).resolve()})
    except ValidationError as e:
        raise ManifestError(f"invalid suite manifest: {e}") from e


def load_suite(path: str | Path, check_files: bool = True) -> Suite:
    """Read and validate a manifest; with `check_files`, a missing media file is an error naming case and path."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"suite manifest not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ManifestError(f"{p} is not valid YAML: {e}") from e
    suite = parse_suite(data, p.parent)
    if check_files:
        missing = suite.missing_files()
        if missing:
            raise ManifestError(
                f"{p}: files not found (paths resolve against {suite.root}):\n  " + "\n  ".join(missing)
            )
    return suite
