"""Two runs side by side: summary metrics, per-case metrics, and overlaid plots. The Gradio tab calls this."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench.evaluation import metrics
from workbench.evaluation.gate import GateResult, Tolerance, case_offsets, compare_summaries
from workbench.evaluation.provenance import differences
from workbench.evaluation.report import Run, _subplots, latency_cdf_axes, load_run

CASE_METRICS = metrics.compared_metrics()  # from the registry


@dataclass
class Comparison:
    a: Run  # baseline
    b: Run  # candidate
    gate: GateResult
    summary: pd.DataFrame  # metric, baseline, current, delta, allowed, better, status
    cases: pd.DataFrame  # case, metric, a, b, delta
    figures: dict[str, Figure]
    warnings: list[str]  # how the two runs were made differently (provenance.differences)


def case_diff(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Long table of every per-case metric present in both runs, for the cases they share."""
    rows = []
    shared = [c for c in a["case"] if c in set(b["case"])]
    ia, ib = a.set_index("case"), b.set_index("case")
    for case in shared:
        for m in CASE_METRICS:
            if m in ia.columns and m in ib.columns:
                va, vb = ia.at[case, m], ib.at[case, m]
                if pd.notna(va) or pd.notna(vb):
                    delta = float(vb) - float(va) if pd.notna(va) and pd.notna(vb) else np.nan
                    rows.append({"case": case, "metric": m, "a": va, "b": vb, "delta": delta})
    return pd.DataFrame(rows, columns=["case", "metric", "a", "b", "delta"])


def plot_sync_comparison(a: Run, b: Run) -> Figure:
    """The weight-free sync curve of each shared case, baseline dashed, candidate solid."""
    shared = [
        c for c in a.details if c in b.details and "landmark_sync" in a.details[c] and "landmark_sync" in b.details[c]
    ]
    fig, ax = _subplots(figsize=(7, 4))
    for cid in shared:
        la, lb = a.details[cid]["landmark_sync"], b.details[cid]["landmark_sync"]
        (line,) = ax.plot(lb["offsets"], lb["curve"], label=f"{cid} ({b.path.name})")
        ax.plot(la["offsets"], la["curve"], "--", color=line.get_color(), alpha=0.7, label=f"{cid} ({a.path.name})")
    ax.set(title="weight-free sync curves: dashed = A, solid = B", xlabel="offset (frames)", ylabel="correlation")
    if shared:
        ax.legend(fontsize=6)
    else:
        ax.text(0.5, 0.5, "no shared sync curves", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_latency_comparison(a: Run, b: Run) -> Figure:
    """Per-frame latency CDF of all cases of each run pooled."""
    fig, ax = _subplots(figsize=(7, 4))
    series = [
        (
            run.path.name,
            [v for d in run.details.values() for v in (d.get("latency") or {}).get("total_ms") or []],
            style,
        )
        for run, style in ((a, "--"), (b, "-"))
    ]
    latency_cdf_axes(ax, series, "per-frame latency CDF (all cases)")
    fig.tight_layout()
    return fig


def plot_metric_bars(cases: pd.DataFrame, metric: str) -> Figure:
    sub = cases[cases.metric == metric]
    fig, ax = _subplots(figsize=(7, 3.5))
    x = np.arange(len(sub))
    ax.bar(x - 0.2, sub["a"].astype(float), 0.4, label="A")
    ax.bar(x + 0.2, sub["b"].astype(float), 0.4, label="B")
    ax.set_xticks(x, sub["case"], rotation=30, fontsize=7)
    ax.set(title=metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def compare_runs(
    a: str | Path | Run, b: str | Path | Run, tolerances: dict[str, Tolerance] | None = None
) -> Comparison:
    """Compare run A (baseline) with run B (candidate)."""
    ra = a if isinstance(a, Run) else load_run(a)
    rb = b if isinstance(b, Run) else load_run(b)
    offsets = tuple(case_offsets(r.table.to_dict("records")) for r in (rb, ra))
    gate = compare_summaries(rb.summary["metrics"], ra.summary["metrics"], tolerances, offsets)
    cases = case_diff(ra.table, rb.table)
    figures = {"sync": plot_sync_comparison(ra, rb), "latency": plot_latency_comparison(ra, rb)}
    for m in ("ls_confidence", "syncnet_lse_c"):
        if (cases.metric == m).any():
            figures[m] = plot_metric_bars(cases, m)
    warnings = differences(ra.metadata, rb.metadata)
    return Comparison(ra, rb, gate, gate.table(), cases, figures, warnings)
