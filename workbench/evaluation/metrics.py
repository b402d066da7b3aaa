"""The one registry of the evaluation's metrics: every per-case column and every suite-level number.

Each `Metric` says what it is called in `cases.json`/`cases.csv` (`name`), how people see it (`label`, `unit`,
`explain`), which way is better (`direction`), how a suite folds it (`aggregate` into `summary_name`) and how
much the summary may worsen before the regression gate fails (`tolerance`). The report, `eval compare`, the
gate, the CLI, the runner and the Evaluation tab all read this table; none keeps its own list.

Tolerances: a metric is worse when it moved in its bad direction by more than the larger of `abs` and
`rel` times the baseline's value. Latency tolerances are relative and wide (they depend on the machine);
sync and quality tolerances are absolute and were set from run-to-run spread of the committed gate suite
(`eval/suites/gate.yaml`, docs/evaluation_quality.md) and from the size of the deliberate regressions it must catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Direction = Literal["lower", "higher", ""]
Aggregate = Literal["mean", "sum"]


@dataclass(frozen=True)
class Tolerance:
    direction: Literal["lower", "higher"]  # which way is better
    abs: float = 0.0
    rel: float = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))


@dataclass(frozen=True)
class Metric:
    name: str  # the per-case column (or, for a suite-only metric, the summary key)
    label: str  # short header for narrow tables
    unit: str  # "" for a plain ratio or correlation
    direction: Direction  # which way is better; "" = informational
    explain: str  # one line for people: what it measures and what it answers
    group: str  # "case", "sync", "quality", "stream", "latency", "suite"
    aggregate: Aggregate | None = None  # how the suite summary folds the column; None: not summarised
    summary_name: str | None = None  # default: f"{name}_{aggregate}" ("mean") or f"{name}_total" ("sum")
    tol_abs: float | None = None  # allowed worsening of the summary; None (and tol_rel None): not gated
    tol_rel: float | None = None
    table: bool = True  # a column of the per-case tables (report, tab)
    cli: bool = False  # a column of the CLI's narrow per-case table
    compare: bool = True  # diffed per case by `eval compare`
    per_case: bool = True  # False: a suite-level number with no per-case column

    @property
    def summary(self) -> str | None:
        if not self.per_case:
            return self.name
        if self.aggregate is None:
            return None
        return self.summary_name or f"{self.name}_{'total' if self.aggregate == 'sum' else 'mean'}"

    @property
    def tolerance(self) -> Tolerance | None:
        if self.direction not in ("lower", "higher") or (self.tol_abs is None and self.tol_rel is None):
            return None
        return Tolerance(self.direction, abs=self.tol_abs or 0.0, rel=self.tol_rel or 0.0)  # type: ignore[arg-type]


def _m(*args, **kw) -> Metric:
    return Metric(*args, **kw)


# Order is the order of the per-case table's columns.
METRICS: tuple[Metric, ...] = (
    # --- the case itself ---
    _m("n_frames", "frames", "frames", "", "video frames scored", "case", compare=False),
    _m("expected_offset", "expect", "frames", "", "the audio shift the case injects (a control)", "case", cli=True),
    # --- sync: offset and strength ---
    _m(
        "ls_offset",
        "ls off",
        "frames",
        "",
        "weight-free A/V offset (+ = audio ahead); 'undetermined' when the peak is too weak to trust",
        "sync",
        cli=True,
    ),
    _m(
        "ls_offset_error",
        "ls err",
        "frames",
        "lower",
        "|offset - injected shift|",
        "sync",
        "mean",
        tol_abs=0.5,
        table=False,
        compare=False,
    ),
    _m(
        "ls_in_sync",
        "in sync",
        "",
        "higher",
        "offset within ±1 frame of the injected shift",
        "sync",
        "mean",
        summary_name="ls_in_sync_rate",
        tol_abs=0.0,
        table=False,
        compare=False,
    ),
    _m(
        "ls_determined",
        "determined",
        "",
        "higher",
        "the offset was strong enough to report",
        "sync",
        "mean",
        summary_name="ls_determined_rate",
        table=False,
        compare=False,
    ),
    _m(
        "ls_confidence",
        "ls conf",
        "",
        "higher",
        "sync peak minus the median over offsets (LSE-C analogue)",
        "sync",
        "mean",
        tol_abs=0.03,
        cli=True,
    ),
    _m(
        "ls_evidence",
        "evidence",
        "",
        "higher",
        "margin over the best rival offset × √frames (reporting rule)",
        "sync",
        table=False,
    ),
    _m(
        "ls_peak",
        "sync peak",
        "",
        "higher",
        "sync strength: mouth–loudness correlation at the best offset (MuseTalk #16 #113: the lips change shape)",
        "sync",
        "mean",
        tol_abs=0.04,
    ),
    _m(
        "ls_margin",
        "sync margin",
        "",
        "higher",
        "sync strength: the peak minus the best rival more than 2 frames away (a syllable early or late)",
        "sync",
        "mean",
        tol_abs=0.04,
    ),
    _m(
        "ls_lag0",
        "sync @0",
        "",
        "higher",
        "correlation at the injected shift (lag 0 for a clean case): a late or early mouth loses it",
        "sync",
        "mean",
        tol_abs=0.04,
        cli=True,
    ),
    _m("syncnet_offset", "SN off", "frames", "", "SyncNet's A/V offset (protocol)", "sync", cli=True),
    _m(
        "syncnet_offset_error",
        "SN err",
        "frames",
        "lower",
        "|SyncNet offset - injected shift|",
        "sync",
        "mean",
        tol_abs=0.5,
        table=False,
        compare=False,
    ),
    _m(
        "syncnet_lse_d",
        "LSE-D",
        "",
        "lower",
        "SyncNet's min mean distance (lower is better)",
        "sync",
        "mean",
        tol_abs=0.2,
        cli=True,
    ),
    _m(
        "syncnet_lse_c",
        "LSE-C",
        "",
        "higher",
        "SyncNet's median minus min distance (higher is better)",
        "sync",
        "mean",
        tol_abs=0.2,
        cli=True,
    ),
    # --- what people see ---
    _m(
        "silent_open_share",
        "open in silence",
        "",
        "lower",
        "share of silent frames whose lip gap exceeds the person's closed level (MuseTalk #32 #257 #337 #384)",
        "quality",
        "mean",
        tol_abs=0.08,
        cli=True,
    ),
    _m(
        "silent_open_excess",
        "silence excess",
        "iod",
        "lower",
        "mean lip gap above the closed level over silent frames, in inter-ocular distances",
        "quality",
        "mean",
        tol_abs=0.01,
    ),
    _m(
        "jitter_lips",
        "lip jitter",
        "× source",
        "lower",
        "lips' frame-to-frame 2nd difference over inter-ocular distance, ÷ the source's (MuseTalk #11 #190 #389)",
        "quality",
        "mean",
        tol_abs=0.15,
        tol_rel=0.1,
        cli=True,
    ),
    _m(
        "jitter_jaw",
        "jaw jitter",
        "× source",
        "lower",
        "jaw line's frame-to-frame 2nd difference over inter-ocular distance, ÷ the source's",
        "quality",
        "mean",
        tol_abs=0.15,
        tol_rel=0.1,
    ),
    _m(
        "mouth_sharpness",
        "mouth sharp",
        "× source",
        "higher",
        "Laplacian variance of the mouth box ÷ the source's (blurry mouth/teeth: MuseTalk #335 #319 #244)",
        "quality",
        "mean",
        tol_abs=0.08,
        cli=True,
    ),
    _m(
        "mouth_gamut",
        "mouth gamut",
        "× source",
        "higher",
        "colour spread (std of Lab) in the mouth box ÷ the source's (flat teeth, smeared beard)",
        "quality",
        "mean",
        tol_abs=0.05,
    ),
    _m(
        "seam_diff",
        "seams",
        "grey levels",
        "lower",
        "mean |render - source| outside the blending mask around the face (paste-back seams, colour drift)",
        "quality",
        "mean",
        tol_abs=0.6,
    ),
    _m(
        "stream_peak_drop",
        "stream Δpeak",
        "",
        "lower",
        "sync peak of the file path minus the streamed path's, same audio (MuseTalk #60 #239)",
        "stream",
        "mean",
        tol_abs=0.05,
    ),
    _m(
        "stream_agreement",
        "stream agree",
        "",
        "higher",
        "share of frames whose streamed audio condition equals the file path's",
        "stream",
        "mean",
        tol_abs=0.02,
    ),
    # --- latency ---
    _m(
        "latency_first_frame_ms",
        "1st ms",
        "ms",
        "lower",
        "audio in → first frame out",
        "latency",
        "mean",
        tol_abs=5.0,
        tol_rel=0.25,
        cli=True,
    ),
    _m(
        "latency_total_p95_ms",
        "p95 ms",
        "ms",
        "lower",
        "95th percentile per-frame latency",
        "latency",
        "mean",
        tol_abs=5.0,
        tol_rel=0.25,
    ),
    _m(
        "latency_sustained_fps",
        "fps",
        "fps",
        "higher",
        "frames per second sustained",
        "latency",
        "mean",
        tol_rel=0.2,
        cli=True,
    ),
    _m("latency_rtf", "RTF", "", "lower", "render time over audio time", "latency", "mean", tol_rel=0.25),
    _m(
        "latency_dropped",
        "dropped",
        "frames",
        "lower",
        "frames dropped",
        "latency",
        "sum",
        tol_abs=0,
        table=False,
        compare=False,
    ),
    _m(
        "latency_late",
        "late",
        "frames",
        "lower",
        "frames later than their deadline",
        "latency",
        "sum",
        tol_abs=2,
        tol_rel=0.25,
    ),
    # --- suite-level only ---
    _m("cases_total", "cases", "", "", "cases in the suite", "suite", per_case=False, table=False, compare=False),
    _m("cases_ok", "ok", "", "", "cases that finished", "suite", per_case=False, table=False, compare=False),
    _m(
        "cases_failed",
        "failed",
        "",
        "lower",
        "cases that crashed",
        "suite",
        per_case=False,
        tol_abs=0,
        table=False,
        compare=False,
    ),
    _m(
        "ls_offset_drift_cases",
        "drifted",
        "cases",
        "lower",
        "cases whose determined offset moved by more than 1 frame against the baseline",
        "suite",
        per_case=False,
        table=False,
        compare=False,
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
# Columns of a per-case table that are not metrics: who the case is and how it went.
HEAD_COLUMNS = ("case", "kind", "status", "renderer")
TAIL_COLUMNS = ("seconds", "error")


def table_columns() -> tuple[str, ...]:
    """The per-case table's columns in order (report, cases.csv, the Evaluation tab)."""
    return HEAD_COLUMNS + tuple(m.name for m in METRICS if m.per_case and m.table) + TAIL_COLUMNS


def cli_columns() -> dict[str, str]:
    """column -> short header for the CLI's narrow table."""
    return {"case": "case", "status": "status", **{m.name: m.label for m in METRICS if m.cli}}


def compared_metrics() -> tuple[str, ...]:
    """Per-case metrics `eval compare` diffs case by case."""
    return tuple(m.name for m in METRICS if m.per_case and m.compare)


def summary_metrics() -> dict[str, tuple[str, str]]:
    """summary metric -> (per-case column, aggregate), what `report.summarise` computes."""
    return {m.summary: (m.name, m.aggregate) for m in METRICS if m.per_case and m.summary and m.aggregate}


def tolerances() -> dict[str, Tolerance]:
    """summary metric -> its default tolerance (the gate's)."""
    out = {}
    for m in METRICS:
        tol, key = m.tolerance, m.summary
        if tol is not None and key is not None:
            out[key] = tol
    return out


def for_summary(name: str) -> Metric | None:
    """The registry entry behind a summary metric name."""
    for m in METRICS:
        if m.summary == name:
            return m
    return None


def describe(name: str) -> Metric | None:
    """The entry for a per-case column or a summary metric name."""
    return BY_NAME.get(name) or for_summary(name)


def glossary_markdown(columns: list[str] | tuple[str, ...] | None = None) -> str:
    """A Markdown table explaining the given columns (default: every metric with a direction)."""
    chosen = [describe(c) for c in columns] if columns is not None else [m for m in METRICS if m.direction]
    lines = ["| metric | unit | better | meaning |", "|---|---|---|---|"]
    for m in chosen:
        if m is not None and m.group != "case":
            lines.append(f"| {m.name} | {m.unit or '—'} | {m.direction or '—'} | {m.explain} |")
    return "\n".join(lines)
