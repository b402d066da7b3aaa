"""The long-session drift bench's measurement (bench/drift_measure.py) on synthetic records with a planted
offset and a planted drift: what it reports must be what was planted, by both clocks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _measure_module():
    spec = importlib.util.spec_from_file_location("drift_measure", ROOT / "bench" / "drift_measure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


dm = _measure_module()


def _session(minutes=3.0, offset_ms=80.0, drift_ms_per_min=0.0, arrival_extra_ms=0.0, seed=0, drop_every=0):
    """Records of a session whose picture trails its sound by `offset_ms` (+ `drift_ms_per_min` per minute) on
    the sender's clock; on arrival the picture is a further `arrival_extra_ms` late, with network jitter.

    Speech-like loudness: bursts and pauses per 40 ms tick. Audio: 20 ms frames; video: one picture per tick
    whose level is its tick's loudness. The sender reports say where each stream's media time sits on the
    sender clock, with the video's placed `offset_ms + drift` later (how a sender that stamps late looks)."""
    rng = np.random.default_rng(seed)
    n_ticks = int(minutes * 60 * 25)
    loud = np.zeros(n_ticks)
    i = 0
    while i < n_ticks:
        n = int(rng.integers(3, 12))
        loud[i : i + n] = rng.uniform(0.05, 0.3, size=min(n, n_ticks - i)) if rng.random() < 0.6 else 0.0
        i += n
    t_tick = np.arange(n_ticks) * 0.04
    t_sender0 = 1_000.0  # the sender's wall clock at media time 0
    # audio: two 20 ms frames per tick, sent on time, arriving 5 ms later with ±2 ms jitter
    a_media = np.repeat(t_tick, 2) + np.tile([0.0, 0.02], n_ticks)
    a_loud = np.repeat(loud, 2) + rng.normal(0, 0.005, 2 * n_ticks)
    a_arrival = t_sender0 + a_media + 0.005 + rng.uniform(-0.002, 0.002, len(a_media))
    # video: the picture of tick k is stamped at k*40 ms of its own media clock; the sender maps that clock to
    # its wall time offset_ms (+ drift) later than the audio's
    lag_s = (offset_ms + drift_ms_per_min * t_tick / 60) / 1000
    v_media = t_tick.copy()
    v_level = np.round(255 * np.clip(4 * loud, 0, 1))
    v_arrival = t_sender0 + t_tick + lag_s + 0.005 + arrival_extra_ms / 1000 + rng.uniform(-0.004, 0.004, n_ticks)
    if drop_every:
        keep = np.arange(n_ticks) % drop_every != 0
        v_media, v_level, v_arrival = v_media[keep], v_level[keep], v_arrival[keep]
    audio = dm.Stream(a_media, a_arrival, a_loud, 0.02)
    video = dm.Stream(v_media, v_arrival, v_level, 0.04)
    # one sender report a second per stream: media time m is at sender time t_sender0 + m (+ lag for video)
    sr_t = np.arange(0.5, minutes * 60, 1.0)
    a_sr = dm.Reports(t_sender0 + sr_t, sr_t)
    v_sr = dm.Reports(t_sender0 + sr_t + (offset_ms + drift_ms_per_min * sr_t / 60) / 1000, sr_t)
    return audio, video, a_sr, v_sr


def test_a_planted_offset_is_found_by_both_clocks_and_no_drift_is_reported():
    result = dm.measure(*_session(minutes=2, offset_ms=80.0, arrival_extra_ms=30.0), window_s=60.0)
    assert len(result["windows"]) == 2
    for w in result["windows"]:
        assert w["rtp_lag_ms"] == pytest.approx(80, abs=3), w
        assert w["arrival_lag_ms"] == pytest.approx(110, abs=4), w
        assert w["rtp_corr"] > 0.9 and w["rtp_margin"] > 0.5
        assert w["video_fps_per_audio_s"] == pytest.approx(25, abs=0.1)
        assert w["video_skipped_ticks"] == 0 and w["video_stalls_over_100ms"] == 0
    assert abs(result["drift_rtp_ms"]) <= 3 and abs(result["drift_arrival_ms"]) <= 4


def test_a_planted_slow_drift_shows_as_the_last_minus_the_first_window():
    # 20 ms more per minute: the first window centres near +90 ms of lag, the fourth near +150 ms
    result = dm.measure(*_session(minutes=4, offset_ms=80.0, drift_ms_per_min=20.0), window_s=60.0)
    lags = [w["rtp_lag_ms"] for w in result["windows"]]
    assert lags == sorted(lags), lags
    assert result["drift_rtp_ms"] == pytest.approx(60, abs=6)
    assert result["drift_arrival_ms"] == pytest.approx(60, abs=6)
    assert result["first"]["rtp_lag_ms"] == pytest.approx(90, abs=5)


def test_a_negative_offset_and_dropped_pictures_are_reported():
    # the picture 120 ms early, every 10th picture never arrives
    result = dm.measure(*_session(minutes=1, offset_ms=-120.0, drop_every=10), window_s=60.0)
    w = result["windows"][0]
    assert w["rtp_lag_ms"] == pytest.approx(-120, abs=3)
    assert w["video_skipped_ticks"] == pytest.approx(150, abs=2)
    assert w["video_fps_per_audio_s"] == pytest.approx(22.5, abs=0.1)


def test_no_signal_is_no_offset_rather_than_a_made_up_one():
    audio, video, a_sr, v_sr = _session(minutes=1)
    flat = dm.Stream(video.media_s, video.arrival_s, np.zeros_like(video.value), 0.04)  # a mouth that never moves
    w = dm.measure(audio, flat, a_sr, v_sr)["windows"][0]
    assert w["rtp_lag_ms"] is None and w["arrival_lag_ms"] is None
    with pytest.raises(ValueError, match="too few frames"):
        dm.measure(audio.take(np.arange(len(audio.media_s)) < 5), video, a_sr, v_sr)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_drift", ROOT / "bench" / "bench_drift.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_picture_reader_recovers_the_stamped_level_and_timestamps_convert_across_a_wrap():
    import av

    bd = _bench_module()
    rng = np.random.default_rng(0)
    read = []
    for level in (0, 60, 130, 255):
        img = rng.integers(0, 256, size=(720, 416, 3), dtype=np.uint8)
        img[: bd.CORNER, : bd.CORNER] = level
        frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        read.append(bd.corner_signal(frame))
    assert read == sorted(read) and read[-1] - read[0] > 150, read  # grey level → luma, in order, full swing
    assert bd.rtp_seconds(100, 2**32 - 90_000, 90_000) == pytest.approx(1.0 + 100 / 90_000)  # wrapped forward
    assert bd.rtp_seconds(2**32 - 48_000, 0, 48_000) == pytest.approx(-1.0)  # a report before the first frame
    assert bd.ntp_to_unix((2_208_988_800 + 10) << 32 | 2**31) == pytest.approx(10.5)
