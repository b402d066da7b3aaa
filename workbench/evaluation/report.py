"""Run folders: the per-case table and the summary as CSV, JSON and Markdown, the plots, and the metadata.

Layout of a run folder:
    cases.csv, cases.json      one row per case (failed cases included, with their error)
    summary.json, summary.csv  suite-level metrics (what the regression gate compares)
    metadata.json              git commit, machine, renderers, weight hashes, parameters, timings
    details.json               curves and per-frame latencies per case (what the plots are drawn from)
    report.md                  all of the above for people, with the plots
    plots/sync_curves.png, plots/latency_cdf.png, plots/stage_breakdown.png
    cases/<id>/render.mp4      generated clips
Every file is written through `workbench.atomic`.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from workbench import atomic
from workbench.evaluation import metrics
from workbench.evaluation.errors import EvalError

STAGE_ORDER = ("features", "render", "composite", "send")
# Column order and suite metrics come from the registry (workbench/evaluation/metrics.py), as every view's do.
TABLE_COLUMNS = metrics.table_columns()
SUMMARY_METRICS: dict[str, tuple[str, str]] = metrics.summary_metrics()


@dataclass
class Run:
    """A run folder read back."""

    path: Path
    table: pd.DataFrame
    summary: dict
    metadata: dict
    details: dict


def _subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.5, 4), squeeze: bool = True):
    """A figure without pyplot: no global backend, safe in worker processes, servers and notebooks alike."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=squeeze)


# --- summary ------------------------------------------------------------------------------------
def _finite(v) -> bool:
    return v is not None and isinstance(v, int | float | np.integer | np.floating) and math.isfinite(float(v))


def summarise(rows: list[dict]) -> dict:
    """Suite-level metrics over the cases that finished; counts of failures."""
    ok = [r for r in rows if r.get("status") == "ok"]
    out: dict[str, float | int] = {
        "cases_total": len(rows),
        "cases_ok": len(ok),
        "cases_failed": len(rows) - len(ok),
    }
    for name, (col, how) in SUMMARY_METRICS.items():
        vals = [float(r[col]) for r in ok if _finite(r.get(col))]
        if vals:
            out[name] = float(np.sum(vals)) if how == "sum" else float(np.mean(vals))
    return {"metrics": out, "failed": {r["case"]: r.get("error", "") for r in rows if r.get("status") != "ok"}}


# --- plots --------------------------------------------------------------------------------------
def plot_sync_curves(details: dict) -> Figure:
    """Per case: the weight-free metric's correlation and SyncNet's confidence (median distance minus distance)
    over offsets; a dot marks each case's best offset."""
    cases = {k: v for k, v in details.items() if "landmark_sync" in v or "syncnet" in v}
    has_sn = any("syncnet" in v for v in cases.values())
    fig, axes = _subplots(1, 2 if has_sn else 1, figsize=(11 if has_sn else 6.5, 4), squeeze=False)
    ax = axes[0, 0]
    for cid, d in cases.items():
        ls = d.get("landmark_sync")
        if ls:
            (line,) = ax.plot(ls["offsets"], ls["curve"], label=cid)
            ax.plot([ls["offset"]], [ls["peak"]], "o", color=line.get_color())
    ax.set(
        title="weight-free sync: correlation over offsets",
        xlabel="offset (frames, + = audio ahead)",
        ylabel="correlation",
    )
    ax.axvline(0, color="0.7", lw=0.8)
    if cases:
        ax.legend(fontsize=7)
    if has_sn:
        ax2 = axes[0, 1]
        for cid, d in cases.items():
            sn = d.get("syncnet")
            if sn:
                dist = np.asarray(sn["mean_dists"])
                conf = np.median(dist) - dist
                (line,) = ax2.plot(sn["offsets"], conf, label=cid)
                ax2.plot([sn["offset"]], [sn["lse_c"]], "o", color=line.get_color())
        ax2.set(
            title="SyncNet: median distance minus distance",
            xlabel="offset (frames, + = audio ahead)",
            ylabel="confidence",
        )
        ax2.axvline(0, color="0.7", lw=0.8)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latency_cdf_axes(ax, series: list[tuple[str, list[float], str]], title: str) -> None:
    """Step CDFs of per-frame latencies, one line per (label, values, line style); says so when there are none."""
    for label, values, style in series:
        if values:
            x = np.sort(np.asarray(values, dtype=float))
            ax.step(x, np.arange(1, len(x) + 1) / len(x), style, where="post", label=label)
    ax.set(title=title, xlabel="audio in → frame out (ms)", ylabel="fraction of frames", ylim=(0, 1.02))
    if ax.lines:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no latency data", ha="center", va="center", transform=ax.transAxes)


def plot_latency_cdf(details: dict) -> Figure:
    """Cumulative distribution of per-frame total latency (audio in to last stage), one line per case."""
    fig, ax = _subplots(figsize=(6.5, 4))
    series = [(cid, (d.get("latency") or {}).get("total_ms") or [], "-") for cid, d in details.items()]
    latency_cdf_axes(ax, series, "per-frame latency CDF")
    fig.tight_layout()
    return fig


def plot_stage_breakdown(details: dict) -> Figure:
    """Median time per stage per case, stacked."""
    fig, ax = _subplots(figsize=(6.5, 4))
    cases = [(cid, d["latency"]["stages"]) for cid, d in details.items() if d.get("latency", {}).get("stages")]
    bottom = np.zeros(len(cases))
    for stage in STAGE_ORDER:
        vals = np.array([st.get(stage, {}).get("p50", 0.0) for _, st in cases])
        if len(cases) and vals.any():
            ax.bar([c for c, _ in cases], vals, bottom=bottom, label=stage)
            bottom += vals
    ax.set(title="median latency per stage", ylabel="ms")
    if cases:
        ax.legend(fontsize=7)
        ax.tick_params(axis="x", rotation=30, labelsize=7)
    else:
        ax.text(0.5, 0.5, "no latency data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_quality(rows: list[dict] | pd.DataFrame) -> Figure:
    """Per case, the quality scores that are ratios to the source (1 = as the source) and the silence share."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows
    names = [m.name for m in metrics.METRICS if m.group == "quality" and m.name in df.columns]
    fig, ax = _subplots(figsize=(7.5, 4))
    shown = df[["case", *names]].dropna(how="all", subset=names) if names else df.iloc[0:0]
    if len(shown):
        width = 0.8 / max(1, len(names))
        x = np.arange(len(shown))
        for k, n in enumerate(names):
            ax.bar(x + k * width - 0.4 + width / 2, pd.to_numeric(shown[n], errors="coerce"), width, label=n)
        ax.set_xticks(x, shown["case"], rotation=30, fontsize=7)
        ax.axhline(1.0, color="0.6", lw=0.8)
        ax.legend(fontsize=6, ncol=2)
    else:
        ax.text(0.5, 0.5, "no quality scores", ha="center", va="center", transform=ax.transAxes)
    ax.set(title="what people see: ratios to the source (1 = as the source); shares; grey levels")
    fig.tight_layout()
    return fig


PLOTS = {"sync_curves": plot_sync_curves, "latency_cdf": plot_latency_cdf, "stage_breakdown": plot_stage_breakdown}
ROW_PLOTS = {"quality": plot_quality}  # drawn from the per-case rows rather than details.json


def save_figure(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic.write_bytes(path, buf.getvalue())


# --- tables -------------------------------------------------------------------------------------
def cases_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    first = [c for c in TABLE_COLUMNS if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


UNDETERMINED = "undetermined"


def show_undetermined(df: pd.DataFrame) -> pd.DataFrame:
    """A copy for display where a weight-free offset that was not determined reads "undetermined", not a blank
    (cases.json keeps it null)."""
    if "ls_offset" not in df.columns or "ls_determined" not in df.columns:
        return df
    out = df.copy()
    out["ls_offset"] = out["ls_offset"].astype(object)
    out.loc[(out["ls_determined"] == 0) & out["ls_offset"].isna(), "ls_offset"] = UNDETERMINED
    return out


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float | np.floating):
        if float(v).is_integer() and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(None if pd.isna(r[c]) else r[c]) for c in cols) + " |")
    return "\n".join(lines)


def render_markdown(table: pd.DataFrame, summary: dict, metadata: dict) -> str:
    git = metadata.get("git", {})
    lines = [
        f"# Evaluation: {metadata.get('suite', '')}",
        "",
        f"- created: {metadata.get('created', '')}",
        f"- commit: `{git.get('commit', 'unknown')}`{' (dirty)' if git.get('dirty') else ''}",
        f"- renderers: {', '.join(metadata.get('renderers', [])) or '—'}",
        f"- weights: {json.dumps(metadata.get('weights', {}))}",
        f"- machine: {metadata.get('machine', {}).get('platform', '')}, "
        f"{metadata.get('machine', {}).get('cpu_count', '?')} CPUs",
        f"- wall time: {metadata.get('timings', {}).get('total_seconds', '?')} s",
        "",
    ]
    for note in summary.get("notes", []):
        lines += [f"> {note}", ""]
    lines += [
        "## Summary",
        "",
        markdown_table(pd.DataFrame([{"metric": k, "value": v} for k, v in summary.get("metrics", {}).items()])),
        "",
    ]
    shown = [c for c in TABLE_COLUMNS if c in table.columns and c != "error"]
    lines += ["## Cases", "", markdown_table(show_undetermined(table)[shown]) if len(table) else "(none)", ""]
    if summary.get("failed"):
        lines += ["## Failed cases", ""] + [f"- **{k}**: {v}" for k, v in summary["failed"].items()] + [""]
    lines += ["## Plots", ""] + [f"![{name}](plots/{name}.png)" for name in [*PLOTS, *ROW_PLOTS]] + [""]
    lines += ["## What the columns mean", "", metrics.glossary_markdown([c for c in shown if metrics.describe(c)]), ""]
    lines += [
        "Offsets are in frames at 25 fps; positive means the audio is ahead of the video (syncnet_python's sign).",
        "ls_* is the weight-free landmark metric; syncnet_* the SyncNet protocol (LSE-D lower is better, "
        "LSE-C higher is better).",
        "ls_offset is *undetermined* when the correlation peak is too weak to trust (calibrated on held-apart real "
        "clips: see the README); undetermined cases are left out of ls_offset_error_mean and ls_in_sync_rate, and "
        "the gate does not judge those two when any case is undetermined.",
        "",
    ]
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def write_run(folder: str | Path, rows: list[dict], summary: dict, metadata: dict, details: dict) -> Path:
    """Write every report file of a run into `folder` (atomically, file by file)."""
    folder = Path(folder)
    table = cases_table(rows)
    atomic.write_text(folder / "cases.csv", table.to_csv(index=False))
    atomic.write_json(folder / "cases.json", _jsonable(rows))
    atomic.write_json(folder / "summary.json", _jsonable({"suite": metadata.get("suite"), **summary}))
    atomic.write_text(
        folder / "summary.csv",
        pd.DataFrame([{"metric": k, "value": v} for k, v in summary.get("metrics", {}).items()]).to_csv(index=False),
    )
    atomic.write_json(folder / "metadata.json", _jsonable(metadata))
    atomic.write_json(folder / "details.json", _jsonable(details))
    for name, fn in PLOTS.items():
        save_figure(fn(details), folder / "plots" / f"{name}.png")
    for name, fn in ROW_PLOTS.items():
        save_figure(fn(rows), folder / "plots" / f"{name}.png")
    atomic.write_text(folder / "report.md", render_markdown(table, summary, metadata))
    return folder


def load_run(path: str | Path) -> Run:
    """A run folder (or its summary.json) read back."""
    p = Path(path)
    if p.is_file():
        p = p.parent
    needed = ["cases.csv", "summary.json", "metadata.json", "details.json"]
    missing = [n for n in needed if not (p / n).is_file()]
    if missing:
        raise EvalError(f"{p} is not a run folder: missing {', '.join(missing)}")
    return Run(
        path=p,
        table=pd.read_csv(p / "cases.csv"),
        summary=json.loads((p / "summary.json").read_text()),
        metadata=json.loads((p / "metadata.json").read_text()),
        details=json.loads((p / "details.json").read_text()),
    )


def latest_run(runs_dir: str | Path) -> Path:
    """The most recently written run folder under `runs_dir` (notebooks/eval_report.ipynb opens it by default)."""
    runs = [d for d in Path(runs_dir).glob("*") if (d / "summary.json").is_file() and not d.name.startswith(".")]
    if not runs:
        raise EvalError(f"no run folders under {runs_dir}")
    return max(runs, key=lambda d: (d / "summary.json").stat().st_mtime)
