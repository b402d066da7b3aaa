"""An auto-scored bbox_shift sweep: render the same audio with each value across the avatar's measured range, score
every variant with the weight-free metrics (and LSE-C/LSE-D when SyncNet's weights exist), plot score against value
and recommend the best. `workbench tune` and the tuning tab call `sweep_bbox_shift`.

"Which bbox_shift?" is the most asked MuseTalk question (#16, #113, #402): the value moves the crop, and with it how
wide the generated mouth opens and whether the lips keep their shape. The score that ranks the values is
`sweep_score`: sync strength at lag 0 (a mouth that follows the speech) plus its margin over rival lags, less
the share of silent frames with an open mouth and less lip jitter beyond the source's own; SyncNet's LSE-C, when
its weights exist, is added scaled to the same range. Every term is a registry metric, so the plot shows them too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from workbench.avatars.model import Avatar, PrepParams
from workbench.evaluation.case import sync_fields
from workbench.evaluation.case_quality import quality_fields
from workbench.evaluation.report import _subplots
from workbench.evaluation.scoring import Scorers, score_clip

Progress = Callable[[float, str], None]
MAX_VALUES = 9  # renders per sweep: each is a full preparation, render and scoring
LSE_C_SCALE = 0.05  # LSE-C of a few units against correlations of a few tenths
SWEEP_TERMS = ("ls_lag0", "ls_margin", "silent_open_share", "jitter_lips", "syncnet_lse_c")


@dataclass
class SweepPoint:
    value: int
    row: dict  # the registry's per-case metrics for this value
    score: float


@dataclass
class SweepResult:
    points: list[SweepPoint]
    best: SweepPoint
    params: PrepParams  # the base parameters with the best bbox_shift
    notes: list[str] = field(default_factory=list)

    def table(self):
        import pandas as pd

        return pd.DataFrame(
            [{"bbox_shift": p.value, "score": p.score, **{k: p.row.get(k) for k in SWEEP_TERMS}} for p in self.points]
        )


def sweep_score(row: dict) -> float:
    """Higher is better (see the module docstring); a variant with no sync result scores -inf."""
    lag0 = row.get("ls_lag0")
    if lag0 is None or not np.isfinite(lag0):
        return float("-inf")
    score = float(lag0) + float(row.get("ls_margin") or 0.0)
    score -= float(row.get("silent_open_share") or 0.0)
    score -= 0.25 * max(0.0, float(row.get("jitter_lips") or 1.0) - 1.0)
    if row.get("syncnet_lse_c") is not None:
        score += LSE_C_SCALE * float(row["syncnet_lse_c"])
    return score


def sweep_values(avatar: Avatar, n: int = 5, values: Sequence[int] | None = None) -> list[int]:
    """The values to try: the given ones, else n spread over the avatar's measured range (0 included)."""
    if values:
        vals = sorted({int(v) for v in values})
    else:
        lo, hi = avatar.bbox_range
        vals = sorted({int(round(v)) for v in np.linspace(lo, hi, max(2, n))} | {0})
    if len(vals) > MAX_VALUES:
        raise ValueError(f"{len(vals)} bbox_shift values; a sweep renders at most {MAX_VALUES}")
    return vals


def sweep_bbox_shift(
    engine,
    source: str | Path,
    audio16k: np.ndarray,
    base: PrepParams,
    values: Sequence[int] | None = None,
    n: int = 5,
    face_detector: str = "dlib",
    progress: Progress | None = None,
) -> SweepResult:
    """Render `audio16k` on the avatar of `source` prepared with each bbox_shift and score each render."""
    if len(audio16k) < 16000 * 2:
        raise ValueError("give at least 2 s of speech to score a sweep (the sync scores need ~1.3 s of frames)")
    first = engine.prepare(source, base)
    base = first.params  # stamped with the loaded weights' version
    vals = sweep_values(first, n, values)
    scorers = Scorers(engine.settings.models_dir, None, face_detector)
    metrics = ["landmark_sync"] + (["syncnet"] if scorers.syncnet is not None else [])
    notes = [] if scorers.syncnet is not None else [scorers.syncnet_missing or "SyncNet unavailable"]
    points = []
    for k, v in enumerate(vals):
        if progress:
            progress(k / len(vals), f"bbox_shift={v}: render")
        # On v1.5 weights the reference forces bbox_shift to 0: a non-zero value there is an explicit experiment.
        force = base.force_bbox_shift or (base.model_version == "v15" and v != 0)
        avatar = engine.prepare(source, replace(base, bbox_shift=v, force_bbox_shift=force))
        frames = engine.render_frames(avatar, audio16k)
        if progress:
            progress((k + 0.5) / len(vals), f"bbox_shift={v}: score")
        row: dict = {}
        details: dict = {}
        scores = score_clip(frames, audio16k, scorers, metrics)
        sync_fields(row, details, scores, 0)
        quality_fields(frames, audio16k, scores, scorers.fitter, avatar, row, details)
        points.append(SweepPoint(v, row, sweep_score(row)))
    best = max(points, key=lambda p: p.score)
    if progress:
        progress(1.0, f"best bbox_shift={best.value}")
    force = base.force_bbox_shift or (base.model_version == "v15" and best.value != 0)
    return SweepResult(points, best, replace(base, bbox_shift=best.value, force_bbox_shift=force), notes)


def plot_sweep(result: SweepResult) -> Figure:
    """Score against bbox_shift (thick), with the terms it is made of; the recommendation marked."""
    fig, ax = _subplots(figsize=(7, 4))
    x = [p.value for p in result.points]
    ax.plot(x, [p.score for p in result.points], "o-", lw=2.5, color="k", label="sweep score")
    for term in SWEEP_TERMS:
        ys = [p.row.get(term) for p in result.points]
        if any(y is not None for y in ys):
            ax.plot(x, [np.nan if y is None else y for y in ys], ".--", lw=1, label=term)
    ax.axvline(result.best.value, color="tab:green", lw=1)
    ax.set(title=f"bbox_shift sweep: recommended {result.best.value}", xlabel="bbox_shift (px)", ylabel="score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
