"""bench/bench_face_box.py's measuring functions on small synthetic inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fb():
    spec = importlib.util.spec_from_file_location("bench_face_box", ROOT / "bench" / "bench_face_box.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_box_error_is_largest_edge_shift_over_reference_width(fb):
    ref = np.array([100.0, 100.0, 200.0, 200.0])
    assert fb.box_error(ref, ref) == 0.0
    assert fb.box_error(ref, ref + [0, 0, 0, 5]) == pytest.approx(0.05)
    assert fb.box_error(ref, ref + [-2, 3, 1, 0]) == pytest.approx(0.03)
    # A dlib pyramid step: the box grows by 1.2 about its centre, each edge moves 10 % of the width.
    assert fb.box_error(ref, np.array([90.0, 90.0, 210.0, 210.0])) == pytest.approx(0.10)
    assert fb.box_error(ref, None) == float("inf")
    with pytest.raises(ValueError, match="no width"):
        fb.box_error(np.array([5.0, 0, 5, 9]), ref)


def test_moved_edge_and_width_ratio(fb):
    ref = np.array([100.0, 100.0, 200.0, 200.0])
    assert fb.moved_edge(ref, ref + [0, 0, 0, 12]) == "bottom"
    assert fb.moved_edge(ref, ref + [-4, 1, 0, 2]) == "left"
    assert fb.width_ratio(ref, np.array([90.0, 90, 210, 210])) == pytest.approx(1.2)


def test_is_pyramid_step(fb):
    assert fb.is_pyramid_step(1.2)
    assert fb.is_pyramid_step(1 / 1.2)
    assert fb.is_pyramid_step(1.44)
    assert fb.is_pyramid_step(1.18)
    assert not fb.is_pyramid_step(1.0)
    assert not fb.is_pyramid_step(1.03)
    assert not fb.is_pyramid_step(1.1)  # half-way: not a level


def test_closed_open_pairs(fb):
    o = np.array([0.05, 0.3, 0.6, 0.0, 0.0, 0.2, 0.2, 0.7, 0.55])
    pairs = fb.closed_open_pairs(o)
    # closed frames 0, 3, 4; open frames 2, 7, 8; at most 2 apart
    assert pairs == [(0, 2), (3, 2), (4, 2)]
    assert fb.closed_open_pairs(o, gap=3) == [(0, 2), (3, 2), (4, 2), (4, 7)]
    assert fb.closed_open_pairs(np.zeros(5)) == []


def test_summarise(fb):
    s = fb.summarise([0.0, 0.0, 0.01, 0.109, float("inf")])
    assert s["pairs"] == 5
    assert s["within_3pct"] == pytest.approx(0.6)
    assert s["median"] == pytest.approx(0.01)
    assert s["p90"] == pytest.approx(0.109 + 0.6 * (1.0 - 0.109))  # the miss counts as 1.0
    assert fb.summarise([])["within_3pct"] is None


def test_median_box_needs_half_the_tries(fb):
    a, b, c = np.array([0.0, 0, 10, 10]), np.array([0.0, 0, 12, 12]), np.array([1.0, 1, 11, 11])
    assert fb.median_box([a, b, c]).tolist() == [0.0, 0.0, 11.0, 11.0]
    assert fb.median_box([a, None, None]) is None
    assert fb.median_box([a, b, None, None]) is not None
    assert fb.mean_box([a, b, c]).tolist() == pytest.approx([1 / 3, 1 / 3, 11.0, 11.0])
    assert fb.mean_box([None, None, a]) is None


def _face(jaw: float, gap: float) -> np.ndarray:
    """68 points: eyes 1 unit apart (iod 100 px), nose base at y 100, chin `jaw` iod below it, inner lips
    `gap` iod apart; a rotation by 30 degrees must not change the measure."""
    lm = np.zeros((68, 2))
    lm[36:42] = [0.0, 0.0]
    lm[42:48] = [100.0, 0.0]
    lm[33] = [50.0, 100.0]
    lm[8] = [50.0, 100.0 + 100.0 * jaw]
    lm[[61, 62, 63]] = [50.0, 150.0]
    lm[[67, 66, 65]] = [50.0, 150.0 + 100.0 * gap]
    return lm


def test_jaw_and_gap_in_interocular_distances_rotation_free(fb):
    lm = _face(0.8, 0.2)
    t = np.deg2rad(30)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    for pts in (lm, lm @ rot.T + [40, -7]):
        jaw, gap = fb.jaw_and_gap(pts[None])
        assert jaw[0] == pytest.approx(0.8)
        assert gap[0] == pytest.approx(0.2)


def test_slope(fb):
    gaps = np.array([0.0, 0.1, 0.2, 0.3])
    jaws = np.array([fb.jaw_and_gap(_face(0.7 + 0.45 * g, g)[None])[0][0] for g in gaps])
    assert fb.slope(gaps, jaws) == pytest.approx(0.45)
    assert np.isnan(fb.slope([0.1, 0.1], [1.0, 2.0]))


def test_failure_kind_and_centre_shift(fb):
    ref = np.array([100.0, 100.0, 200.0, 200.0])
    assert fb.failure_kind(ref, None) == "miss"
    assert fb.failure_kind(ref, np.array([90.0, 90, 210, 210])) == "scale step"
    assert fb.failure_kind(ref, np.array([100.0, 111, 200, 211])) == "shift"  # one HOG cell down
    assert fb.failure_kind(ref, np.array([100.0, 100, 210, 210])) == "other"
    assert fb.centre_shift_down(ref, np.array([100.0, 111, 200, 211])) == pytest.approx(0.11)
    assert fb.centre_shift_down(ref, np.array([100.0, 95, 200, 203])) == pytest.approx(-0.01)
