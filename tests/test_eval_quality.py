"""The quality scores on hand-made cases that must order correctly, and the metric registry every view reads.

The faces are synthetic 68-point landmark tracks (and a textured image for mouth detail) driven by a synthetic
speech envelope: a clean copy, then copies with one defect each. No media, no detector: these run anywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from workbench.config import SAMPLES_PER_FRAME
from workbench.evaluation import metrics, quality
from workbench.evaluation.case_quality import condition_agreement
from workbench.evaluation.landmark_sync import landmark_sync

N = 250  # 10 s at 25 fps


def _envelope(seed: int = 0) -> np.ndarray:
    """(N,) 0..1 syllable envelope with three one-second pauses."""
    rng = np.random.default_rng(seed)
    env = np.zeros(N)
    k = 0
    while k < N:
        length = int(rng.integers(3, 8))
        env[k : k + length] = rng.uniform(0.4, 1.0) if rng.random() < 0.75 else 0.05
        k += length
    for start in (40, 120, 200):
        env[start : start + 25] = 0.0
    return env


def _audio(env: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    per = np.repeat(env, SAMPLES_PER_FRAME)
    return (0.3 * per * rng.standard_normal(len(per))).astype(np.float32)


def _face(gap: float) -> np.ndarray:
    """68 dlib-style points of a frontal face whose inner lips are `gap` pixels apart (jaw drops with it)."""
    p = np.zeros((68, 2))
    t = np.linspace(0, np.pi, 17)
    p[0:17] = np.c_[180 - 95 * np.cos(t), 170 + (150 + 0.5 * gap) * np.sin(t)]
    p[17:27] = np.c_[np.linspace(110, 250, 10), np.full(10, 125)]
    p[27:31] = np.c_[np.full(4, 180), np.linspace(150, 220, 4)]
    p[31:36] = np.c_[np.linspace(160, 200, 5), np.full(5, 228)]
    for base, cx in ((36, 140), (42, 220)):
        a = np.linspace(0, 2 * np.pi, 7)[:-1]
        p[base : base + 6] = np.c_[cx - 30 * np.cos(a), 150 + 8 * np.sin(a)]
    a = np.linspace(0, 2 * np.pi, 13)[:-1]
    p[48:60] = np.c_[180 - 40 * np.cos(a), 285 - (14 + 0.5 * gap) * np.sin(a)]
    p[60] = (150, 285)
    p[64] = (210, 285)
    p[61:64] = np.c_[[165, 180, 195], np.full(3, 285 - 0.5 * gap)]
    p[65:68] = np.c_[[195, 180, 165], np.full(3, 285 + 0.5 * gap)]
    return p


def _track(gaps: np.ndarray) -> np.ndarray:
    return np.stack([_face(g) for g in gaps])


def _smooth(x: np.ndarray) -> np.ndarray:
    return np.convolve(np.pad(x, 1, mode="edge"), np.ones(3) / 3, mode="valid")


@pytest.fixture(scope="module")
def clean():
    env = _envelope()
    gaps = 2.0 + 40.0 * _smooth(env)
    return env, _audio(env), _track(gaps), gaps


def test_mouth_open_in_silence_scores_worse(clean):
    env, audio, lm, gaps = clean
    silent = quality.silent_frames(audio, N)
    assert silent.sum() >= 50  # the three pauses, edges excluded
    level = quality.closed_level(quality.lip_gap(lm))
    good = quality.open_in_silence(quality.lip_gap(lm), silent, level)
    babbling = gaps.copy()
    babbling[silent] = 2.0 + 12.0 * (1 + np.sin(np.arange(int(silent.sum())) * 1.3))  # quivers in the pauses
    bad = quality.open_in_silence(quality.lip_gap(_track(babbling)), silent, level)
    assert good["share"] < 0.05 and good["excess"] < 1e-3
    assert bad["share"] > good["share"] + 0.3
    assert bad["excess"] > good["excess"] + 0.01


def test_jittered_copy_scores_worse(clean):
    _, _, lm, _ = clean
    rng = np.random.default_rng(3)
    jittered = lm.copy()
    jittered[:, 48:68] += rng.integers(-2, 3, size=(N, 1, 2))  # the lips move 1-2 px as a block
    shaky_jaw = lm.copy()
    shaky_jaw[:, 0:17] += rng.normal(0, 1.0, size=(N, 17, 2))
    base_lips, base_jaw = quality.jitter(lm, quality.LIPS), quality.jitter(lm, quality.JAW)
    assert quality.jitter(jittered, quality.LIPS) > 1.5 * base_lips
    assert quality.jitter(shaky_jaw, quality.JAW) > 1.5 * base_jaw
    # as ratios to the source, through the case scorer
    frames = [np.zeros((400, 400, 3), np.uint8)] * N
    src = quality.SourceBehind(frames=frames, landmarks=lm)
    audio = clean[1]
    same = quality.score_quality(frames, lm, audio, src)
    worse = quality.score_quality(frames, jittered, audio, src)
    assert same.jitter_lips == pytest.approx(1.0)
    assert worse.jitter_lips > 1.5


def _textured_face(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    img = rng.integers(60, 200, size=(400, 400, 3), dtype=np.uint8)
    lm = _face(20.0)
    # teeth and a dark cavity inside the inner lips: the detail a blurred mouth loses
    import cv2

    cv2.fillPoly(img, [np.round(lm[60:68]).astype(np.int32)], (30, 20, 60))
    cv2.rectangle(img, (160, 277), (200, 283), (235, 235, 235), -1)
    return img, lm


def test_blurred_mouth_scores_worse():
    import cv2

    img, lm = _textured_face()
    blurred = img.copy()
    x0, y0, x1, y1 = quality.mouth_box(lm, img.shape)
    blurred[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 3)
    src = quality.SourceBehind(frames=[img] * 3, landmarks=np.stack([lm] * 3))
    audio = np.zeros(3 * SAMPLES_PER_FRAME, np.float32)
    same = quality.score_quality([img] * 3, np.stack([lm] * 3), audio, src)
    worse = quality.score_quality([blurred] * 3, np.stack([lm] * 3), audio, src)
    assert same.mouth_sharpness == pytest.approx(1.0) and same.mouth_gamut == pytest.approx(1.0)
    assert worse.mouth_sharpness < 0.5
    assert worse.mouth_gamut < 0.95


def test_shifted_copy_loses_sync_strength_at_lag0(clean):
    env, audio, lm, gaps = clean
    aligned = landmark_sync(lm, audio)
    late = landmark_sync(np.concatenate([lm[:3], lm[:-3]]), audio)  # the mouth 3 frames late
    assert aligned.at(0) > 0.2
    assert late.at(0) < aligned.at(0) - 0.1
    assert late.offset == 3 and aligned.offset == 0
    assert aligned.margin > 0 and aligned.peak >= aligned.at(0)


def test_seams_count_change_outside_the_mask_only():
    rng = np.random.default_rng(2)
    src = rng.integers(0, 255, size=(200, 200, 3), dtype=np.uint8)
    box = (50, 50, 150, 150)
    alpha = np.zeros((100, 100), np.float32)
    alpha[20:80, 20:80] = 1.0
    inside = src.copy()
    inside[80:120, 80:120] = 0  # a change inside the mask: the renderer's own business
    drift = np.clip(src.astype(int) + 6, 0, 255).astype(np.uint8)  # colour drift everywhere
    assert quality.seam_difference([inside], [src], [box], [alpha]) == 0.0
    assert quality.seam_difference([drift], [src], [box], [alpha]) > 4.0


def test_condition_agreement():
    a = [np.array([0.1, 0.2]), np.array([0.3, 0.1]), np.array([0.0, 0.0])]
    assert condition_agreement(a, [x.copy() for x in a]) == 1.0
    b = [a[0], a[1] + 0.05, a[2]]
    assert condition_agreement(b, a) == pytest.approx(2 / 3)
    assert condition_agreement(a[:2], a) == pytest.approx(2 / 3)  # a frame one path lacks disagrees


def test_registry_is_the_one_vocabulary():
    from workbench.evaluation import compare, gate, report
    from workbench.evaluation.quality import QualityScores

    assert report.TABLE_COLUMNS == metrics.table_columns()
    assert gate.DEFAULT_TOLERANCES == metrics.tolerances()
    assert set(compare.CASE_METRICS) <= set(metrics.BY_NAME)
    for key in QualityScores(**{k: 0.5 for k in QualityScores().__dataclass_fields__ if k != "details"}).row():
        m = metrics.BY_NAME[key]
        assert m.direction in ("lower", "higher") and m.tolerance is not None and m.summary in report.SUMMARY_METRICS
    for m in metrics.METRICS:
        assert m.explain and m.label
        if m.tolerance is not None:
            assert m.summary is not None
    # a registered summary metric that got worse beyond its tolerance fails the gate
    res = gate.compare_summaries({"jitter_lips_mean": 1.6}, {"jitter_lips_mean": 1.2})
    assert res.worse == ["jitter_lips_mean"]


def test_committed_gate_baseline_speaks_the_registry():
    """Every score the runner wrote into the committed baseline is a registry metric (or a case attribute), and every
    gated summary metric of the registry that the suite measures is in the baseline's summary."""
    import json
    from pathlib import Path

    base = Path(__file__).parents[1] / "eval" / "suites" / "gate-baseline"
    attributes = {"batch_size", "bbox_shift", "extra_margin", "face_detector", "n_tracks", "track_frames"}
    attributes |= {"render_seconds", *metrics.HEAD_COLUMNS, *metrics.TAIL_COLUMNS}
    for row in json.loads((base / "cases.json").read_text()):
        unknown = set(row) - set(metrics.BY_NAME) - attributes
        assert not unknown, f"{row['case']}: columns outside the registry: {sorted(unknown)}"
    summary = json.loads((base / "summary.json").read_text())["metrics"]
    for name in ("ls_peak_mean", "ls_lag0_mean", "silent_open_share_mean", "jitter_lips_mean", "mouth_sharpness_mean"):
        assert name in summary and name in metrics.tolerances()
