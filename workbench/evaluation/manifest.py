"""Test-suite manifests (YAML): which cases to evaluate and how.

A case is one of
- generated: an avatar source and a driving audio; the engine prepares and renders it, then it is scored;
- reference: an existing video (ground truth, another model's output) scored as it is, with its own audio
  track or a separate audio file;
- latency_log: a streaming session's latency log (JSON lines), measured for latency only.

Relative paths resolve against the manifest's folder. See eval/suites/example.yaml.

Large test sets: `case_lists` names CSV files of cases (columns id, video, and optionally audio, start, seconds),
each with a `kind` (reference or generated) and `defaults` applied to every row, so 400 clips are one CSV line each.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from workbench.avatars.model import PrepParams
from workbench.config import ParsingMode, RendererName
from workbench.evaluation.degrade import Degrade
from workbench.evaluation.errors import ManifestError

# "quality": the weight-free scores of what people see (evaluation/quality.py; needs landmark_sync's track);
# "stream": the same audio through the streaming frontend too, compared with the file path (opt-in: a second render).
MetricName = Literal["landmark_sync", "syncnet", "latency", "quality", "stream"]
ALL_METRICS: tuple[str, ...] = ("landmark_sync", "syncnet", "latency", "quality")
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
    degrade: Degrade | None = Field(None, description="a deliberate regression injected into the output (a control)")


class ReferenceCase(_Case):
    kind: Literal["reference"] = "reference"
    video: Path
    audio: Path | None = None  # None: the video's own audio track
    start: float = Field(0.0, ge=0)
    max_seconds: float | None = Field(None, gt=0)
    metrics: tuple[MetricName, ...] = ("landmark_sync", "syncnet", "quality")

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

    def available(self) -> tuple[Suite, list[str]]:
        """This suite without the cases whose files do not exist here, and the ids left out."""
        kept = [c for c in self.cases if all(p.exists() for p in self.files_of(c).values())]
        kept_ids = {c.id for c in kept}
        skipped = [c.id for c in self.cases if c.id not in kept_ids]
        if not kept:
            raise ManifestError("no case of the suite has its files here: " + "; ".join(self.missing_files()))
        return (self.model_copy(update={"cases": kept}) if skipped else self), skipped

    def missing_files(self) -> list[str]:
        """'case: field -> path' for every file a case names that does not exist."""
        out = []
        for c in self.cases:
            for name, p in self.files_of(c).items():
                if not p.exists():
                    out.append(f"{c.id}: {name} -> {p}")
        return out


CSV_COLUMNS = ("id", "video", "audio", "start", "seconds")
CSV_REQUIRED = ("id", "video")


class CaseList(BaseModel):
    """A CSV of cases: one row per clip, the columns of CSV_COLUMNS; `defaults` are fields shared by every row."""

    model_config = ConfigDict(extra="forbid")

    csv: Path
    kind: Literal["reference", "generated"] = "reference"
    defaults: dict = Field(default_factory=dict)


def _csv_case(row: dict[str, str], kind: str, folder: Path) -> dict:
    """One CSV row as a case mapping. Paths resolve against the CSV's folder.

    A generated row renders `video` (the avatar source) driven by `audio`, or by the video's own audio track when the
    audio cell is empty (the usual reconstruction protocol); `start`/`seconds` select the driving audio (generated)
    or the scored window (reference)."""

    def path(v: str) -> Path:
        p = Path(v).expanduser()
        return p if p.is_absolute() else (folder / p).resolve()

    video = path(row["video"])
    audio = path(row["audio"]) if row.get("audio") else None
    case: dict = {"id": row["id"], "kind": kind}
    if kind == "generated":
        case.update(source=video, audio=audio or video)
        if row.get("start"):
            case["audio_start"] = row["start"]
    else:
        case.update(video=video, audio=audio)
        if row.get("start"):
            case["start"] = row["start"]
    if row.get("seconds"):
        case["max_seconds"] = row["seconds"]
    return case


def read_case_list(spec: CaseList, root: Path, allowed: list[Path] | None = None) -> list[dict]:
    """The cases of one CSV case list (mappings, validated with the rest of the suite).

    `allowed`: folders the CSV must lie in (an uploaded manifest may not read the server's other files)."""
    path = spec.csv.expanduser()
    path = (path if path.is_absolute() else (root / path)).resolve()
    if allowed is not None and not any(path.is_relative_to(a.resolve()) for a in allowed):
        raise ManifestError(f"case list {spec.csv} is outside the uploaded suite's folders")
    if not path.is_file():
        raise ManifestError(f"case list not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in CSV_REQUIRED if c not in header]
        unknown = [c for c in header if c not in CSV_COLUMNS]
        if missing or unknown:
            raise ManifestError(
                f"{path}: columns must be {', '.join(CSV_COLUMNS)} (id and video required); "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(unknown)}")
            )
        cases = []
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not any(row.values()):
                continue  # blank line
            if not row.get("id") or not row.get("video"):
                raise ManifestError(f"{path}:{line}: id and video are required")
            cases.append({**spec.defaults, **_csv_case(row, spec.kind, path.parent.resolve())})
    if not cases:
        raise ManifestError(f"{path}: the case list has no rows")
    return cases


def parse_suite(data: dict, root: str | Path, csv_roots: list[Path] | None = None) -> Suite:
    """A suite from a manifest's mapping; `csv_roots` confines its CSV case lists (see read_case_list)."""
    if not isinstance(data, dict):
        raise ManifestError("a suite manifest must be a YAML mapping with 'name' and 'cases'")
    root = Path(root).resolve()
    data = dict(data)
    try:
        lists = [CaseList(**spec) for spec in (data.pop("case_lists", None) or [])]
    except (TypeError, ValidationError) as e:
        raise ManifestError(f"invalid case_lists entry: {e}") from e
    listed = [case for spec in lists for case in read_case_list(spec, root, csv_roots)]
    if listed:
        data["cases"] = [*(data.get("cases") or []), *listed]
    try:
        return Suite(**{**data, "root": root})
    except ValidationError as e:
        raise ManifestError(f"invalid suite manifest: {e}") from e


def load_suite(path: str | Path, check_files: bool = True, csv_roots: list[Path] | None = None) -> Suite:
    """Read and validate a manifest; with `check_files`, a missing media file is an error naming case and path."""
    p = Path(path)
    if not p.is_file():
        raise ManifestError(f"suite manifest not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ManifestError(f"{p} is not valid YAML: {e}") from e
    suite = parse_suite(data, p.parent, csv_roots)
    if check_files:
        missing = suite.missing_files()
        if missing:
            raise ManifestError(
                f"{p}: files not found (paths resolve against {suite.root}):\n  " + "\n  ".join(missing)
            )
    return suite
