"""Latency statistics from constructed per-frame stage timestamps, and from a latency log file."""

from __future__ import annotations

import pytest

from workbench.evaluation.latency import latency_from_log, latency_stats
from workbench.timing import FrameTiming, write_latency_log


def _stream(frames, t0=100.0, fps=25.0, features=0.010, render=0.030, composite=0.002, send=0.001, lag=0.0):
    """Frame k's audio arrives at t0 + k/fps; each stage takes the given seconds; `lag` delays every output."""
    out = []
    for k in frames:
        a = t0 + k / fps
        f = a + features
        r = f + render
        c = r + composite
        s = c + send + lag
        out.append(FrameTiming(frame=k, audio_in=a, features_ready=f, rendered=r, composited=c, sent=s))
    return out


def test_steady_stream():
    st = latency_stats(_stream(range(50)))
    assert st.n_frames == 50 and st.dropped == 0 and st.late == 0
    assert st.first_frame_ms == pytest.approx(43.0)
    for stage, ms in {"features": 10, "render": 30, "composite": 2, "send": 1, "total": 43}.items():
        for p in ("p50", "p95", "p99"):
            assert st.stages[stage][p] == pytest.approx(ms, abs=1e-6)
    assert st.sustained_fps == pytest.approx(25.0)
    # wall time from the first audio to the last frame out (49/25 s + 43 ms) over 2 s of media
    assert st.rtf == pytest.approx((49 / 25 + 0.043) / 2.0)


def test_dropped_and_late_frames():
    timings = _stream([k for k in range(40) if k not in (10, 11, 12)])
    # frames 30-39 come out 100 ms (2.5 frame periods) late: past the one-frame slack
    for t in timings:
        if t.frame >= 30:
            t.sent += 0.100
    st = latency_stats(timings)
    assert st.dropped == 3
    assert st.late == 10
    assert st.stages["send"]["p99"] > 90  # ms


def test_percentiles_of_spread_stage():
    timings = _stream(range(100))
    for t in timings:  # render takes k ms for frame k
        extra = t.frame / 1000.0
        t.rendered += extra
        t.composited += extra
        t.sent += extra
    st = latency_stats(timings)
    assert st.stages["render"]["p50"] == pytest.approx(30 + 49.5)
    assert st.stages["render"]["p95"] == pytest.approx(30 + 94.05)
    assert st.stages["render"]["p99"] == pytest.approx(30 + 98.01)


def test_file_render_timings_without_send():
    # the engine's file render: one audio_in / features time for all, a batch of 4 shares one render time
    t0 = 10.0
    timings = [
        FrameTiming(
            frame=k, audio_in=t0, features_ready=t0 + 0.5, rendered=t0 + 1 + (k // 4), composited=t0 + 1 + (k // 4)
        )
        for k in range(8)
    ]
    st = latency_stats(timings)
    assert "send" not in st.stages
    assert st.first_frame_ms == pytest.approx(1000.0)
    assert st.sustained_fps == pytest.approx(7 / 1.0)
    assert st.rtf == pytest.approx(2.0 / (8 / 25))


def test_idle_frames_excluded_from_stage_latency():
    timings = _stream(range(20))
    idle = [FrameTiming(frame=20 + k, rendered=200.0 + k / 25, composited=200.0 + k / 25, idle=True) for k in range(5)]
    st = latency_stats(timings + idle)
    assert st.n_idle == 5 and st.n_frames == 25
    assert len(st.total_ms) == 20


def test_latency_log_roundtrip(tmp_path):
    p = tmp_path / "session.jsonl"
    write_latency_log(p, _stream(range(30)), meta={"renderer": "cpu", "fps": 25})
    meta, st = latency_from_log(p)
    assert meta["renderer"] == "cpu"
    assert st.first_frame_ms == pytest.approx(43.0)
    assert st.flat()["latency_total_p95_ms"] == pytest.approx(43.0)


def test_empty_timings_rejected():
    with pytest.raises(ValueError, match="no frame timings"):
        latency_stats([])
