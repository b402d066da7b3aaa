"""The quality gate catches deliberate regressions injected into rendered output.

One small generated case (the CPU renderer on the bundled yongen avatar and Chinese speech, which has pauses) is
run clean, then with the mouth delayed 3 frames, the mouth blurred, and the lips jittered by up to 2 px; each
degraded run's summary, gated against the clean one with the registry's default tolerances, must fail on the
metric that regression should move. The committed suite (eval/suites/gate.yaml) and its baseline get the same check
on real footage in bench/bench_quality_gate.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.evaluation.gate import compare_summaries
from workbench.evaluation.manifest import parse_suite

CASE = {
    "id": "yongen_zh",
    "kind": "generated",
    "renderer": "cpu",
    "source": "yongen.mp4",
    "audio": "speech_zh.ogg",
    "max_frames": 25,
    "max_seconds": 6,
    "metrics": ["landmark_sync", "quality"],
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from workbench.config import Settings
    from workbench.engine import Engine

    tmp = tmp_path_factory.mktemp("gate")
    return Engine(Settings(cache_dir=tmp / "cache", runs_dir=tmp / "runs", models_dir=tmp / "models"))


def _run(engine, examples_dir: Path, tmp: Path, degrade: dict | None = None) -> dict:
    from workbench.evaluation.runner import run_suite

    case = dict(CASE, **({"degrade": degrade} if degrade else {}))
    suite = parse_suite({"name": "gate-test", "cases": [case]}, examples_dir)
    out = run_suite(suite, engine, runs_dir=tmp, face_detector="dlib")
    assert out.rows[0]["status"] == "ok", out.rows[0].get("error")
    return out.summary["metrics"]


@pytest.fixture(scope="module")
def clean(engine, examples_dir, tmp_path_factory):
    return _run(engine, examples_dir, tmp_path_factory.mktemp("clean"))


def test_clean_rerun_passes(engine, examples_dir, tmp_path, clean):
    again = _run(engine, examples_dir, tmp_path)
    assert compare_summaries(again, clean).passed


@pytest.mark.parametrize(
    ("degrade", "expected"),
    [
        ({"delay_frames": 3}, "ls_lag0_mean"),
        ({"blur_mouth": 3.0}, "mouth_sharpness_mean"),
        ({"jitter_px": 2.0, "seed": 1}, "jitter_lips_mean"),
    ],
    ids=["delay3", "blur", "jitter2px"],
)
def test_gate_fails_on_injected_regression(engine, examples_dir, tmp_path, clean, degrade, expected):
    worse = _run(engine, examples_dir, tmp_path, degrade)
    result = compare_summaries(worse, clean)
    assert not result.passed
    assert expected in result.worse, result.table().to_string()
