"""Run folders: tables, summary, metadata, plots; a crashed case is a failed row while the others finish;
--jobs runs cases in parallel processes with the same results; two runs compare; the notebook reproduces the
plots of a run folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from testkit.runs import session_latency_log
from workbench.config import Settings
from workbench.engine import Engine
from workbench.evaluation.compare import compare_runs
from workbench.evaluation.manifest import load_suite
from workbench.evaluation.report import load_run
from workbench.evaluation.runner import run_suite

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "eval_report.ipynb"


def _suite(folder: Path, samples_dir: Path) -> Path:
    """Five cases: a live-session latency log, a clip the engine renders, a real face with speech (2 s),
    a corrupt video, a faceless video."""
    folder.mkdir(parents=True, exist_ok=True)
    session_latency_log(folder / "session.jsonl")
    (folder / "corrupt.mp4").write_bytes(b"this is not a video")
    vw = cv2.VideoWriter(str(folder / "noface.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 120))
    for _ in range(40):
        vw.write(np.full((120, 160, 3), 90, np.uint8))
    vw.release()
    sf.write(folder / "tone.wav", 0.1 * np.sin(np.arange(32000) / 5.0), 16000)
    rel = os.path.relpath(samples_dir, folder)
    (folder / "suite.yaml").write_text(f"""name: tiny
cases:
  - id: session
    kind: latency_log
    log: session.jsonl
  - id: gen
    kind: generated
    source: {rel}/sun.mp4
    audio: {rel}/sun.wav
    renderer: cpu
    max_frames: 20
    audio_start: 2.0
    max_seconds: 1.6
  - id: sun_speech
    kind: reference
    video: {rel}/sun.mp4
    audio: {rel}/sun.wav
    start: 1.0
    max_seconds: 2.0
  - id: corrupt
    kind: reference
    video: corrupt.mp4
    audio: tone.wav
  - id: noface
    kind: reference
    video: noface.avi
    audio: tone.wav
""")
    return folder / "suite.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, samples_dir):
    base = tmp_path_factory.mktemp("eval")
    suite = load_suite(_suite(base / "suite", samples_dir))
    settings = Settings(models_dir=base / "no-models", cache_dir=base / "cache")
    engine = Engine(settings)
    serial = run_suite(suite, engine, base / "runs", jobs=1, run_name="serial", face_detector="dlib")
    parallel = run_suite(suite, engine, base / "runs", jobs=2, run_name="parallel", face_detector="dlib")
    return serial, parallel


def test_run_folder_contents(runs):
    out = runs[0]
    p = out.path
    for name in (
        "cases.csv",
        "cases.json",
        "summary.json",
        "summary.csv",
        "metadata.json",
        "details.json",
        "report.md",
        "plots/sync_curves.png",
        "plots/latency_cdf.png",
        "plots/stage_breakdown.png",
    ):
        assert (p / name).is_file(), name
    for png in (p / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [d for d in p.parent.iterdir() if d.name.startswith(".")]  # no temporary folders left behind

    run = load_run(p)
    status = dict(zip(run.table["case"], run.table["status"], strict=True))
    assert status == {"session": "ok", "gen": "ok", "sun_speech": "ok", "corrupt": "failed", "noface": "failed"}
    errors = dict(zip(run.table["case"], run.table["error"].fillna(""), strict=True))
    assert "not a readable video" in errors["corrupt"]
    assert "NoFaceError" in errors["noface"]

    m = run.summary["metrics"]
    assert m["cases_total"] == 5 and m["cases_ok"] == 3 and m["cases_failed"] == 2
    rows = run.table.set_index("case")
    assert rows.at["session", "latency_first_frame_ms"] == pytest.approx(38.0)
    # the generated case went through the engine: a rendered clip, its frame timings, and both sync scores
    assert (p / "cases" / "gen" / "render.mp4").is_file()
    assert rows.at["gen", "renderer"].startswith("cpu") and rows.at["gen", "n_frames"] == 40
    assert rows.at["gen", "latency_sustained_fps"] > 0 and rows.at["gen", "latency_rtf"] > 0
    off = rows.at["gen", "ls_offset"]  # NaN when the weight-free evidence was too weak: "undetermined"
    assert rows.at["gen", "ls_determined"] in (0, 1)
    assert (-15 <= off <= 15) if rows.at["gen", "ls_determined"] else bool(np.isnan(off))
    assert run.details["gen"]["latency"]["total_ms"]
    assert "ls_confidence_mean" in m and "syncnet_lse_c_mean" not in m
    assert any("SyncNet weights" in n for n in run.summary["notes"])
    assert set(run.summary["failed"]) == {"corrupt", "noface"}

    md = run.metadata
    assert md["weights"]["syncnet_v2.model"] == "none" and md["weights"]["sfd_face.pth"] == "none"
    assert md["weights"]["renderer_weights"] == "random/none"
    assert md["git"]["commit"] and md["machine"]["cpu_count"] >= 1
    assert set(md["timings"]["cases"]) == {"session", "gen", "sun_speech", "corrupt", "noface"}
    assert [c["id"] for c in md["parameters"]["cases"]] == ["session", "gen", "sun_speech", "corrupt", "noface"]
    assert md["renderers"][0].startswith("cpu")

    ls = run.details["sun_speech"]["landmark_sync"]
    assert len(ls["curve"]) == 31 and ls["offsets"][0] == -15
    report = (p / "report.md").read_text()
    assert "## Failed cases" in report and "**corrupt**" in report and "plots/latency_cdf.png" in report
    assert json.loads((p / "cases.json").read_text())[2]["case"] == "sun_speech"


def test_parallel_jobs_same_results(runs):
    serial, parallel = (load_run(r.path) for r in runs)
    cols = ["case", "status", "ls_offset", "ls_confidence"]
    a = serial.table[cols].set_index("case")
    b = parallel.table[cols].set_index("case")
    assert a.index.tolist() == b.index.tolist()  # manifest order, not completion order
    assert (a["status"] == b["status"]).all()
    np.testing.assert_allclose(a["ls_confidence"].astype(float), b["ls_confidence"].astype(float), equal_nan=True)
    assert parallel.metadata["parameters"]["jobs"] == 2


def test_compare_two_runs(runs):
    cmp = compare_runs(runs[0].path, runs[1].path)
    # the same cases scored twice: sync metrics agree; wall-clock latency may differ between serial and parallel
    assert [m for m in cmp.gate.worse if not m.startswith("latency_")] == []
    sync = cmp.summary[cmp.summary.metric.str.startswith("ls_")]
    # ls_offset_error_mean / ls_in_sync_rate exist only when some offset was determined, and are "undetermined"
    # for the gate when some was not; confidence and the determined rate are always there
    assert {"ls_confidence_mean", "ls_determined_rate"} <= set(sync["metric"])
    assert set(sync["status"]) <= {"ok", "undetermined", "untracked"}  # the determined rate has no tolerance
    drift = sync[sync.metric == "ls_offset_drift_cases"]  # per case, from the run tables: nothing moved
    assert drift["current"].tolist() == [0.0] and drift["status"].tolist() == ["ok"]
    row = cmp.cases[(cmp.cases.case == "sun_speech") & (cmp.cases.metric == "ls_evidence")]
    assert len(row) == 1 and float(row["delta"].iloc[0]) == 0.0
    assert {"sync", "latency"} <= set(cmp.figures)


def test_notebook_reproduces_run_plots(runs):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ["EVAL_RUN"] = str(runs[0].path)
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        ).execute()
    finally:
        del os.environ["EVAL_RUN"]
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    for name in ("sync_curves", "latency_cdf", "stage_breakdown"):
        assert f"{name}: reproduced" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 3
