"""The measuring half of bench/bench_drift.py: received A/V records in, the A/V offset per window out.

Pure numpy, no server and no network, so tests/test_bench_drift.py can plant an offset and a drift in synthetic
records and check that they come back. A *record* is what the client kept of one received frame:

* `media_s`: its RTP timestamp in seconds, relative to its stream's first frame (aiortc's receiver subtracts
  the first timestamp; video runs on the 90 kHz clock, Opus on 48 kHz);
* `arrival_s`: when it came out of the receiver on the client's clock (`time.time()`);
* `value`: the signal compared: loudness (RMS) for an audio frame, the mouth signal for a picture.

Two clocks are compared, each the way one kind of player lines the streams up:

* **RTP / sender reports** (what a player that honours timestamps shows, as a browser does): each stream's
  media time is put on the sender's wall clock with the RTCP sender reports of that stream (an SR pairs an RTP
  timestamp with the sender's NTP time). The mapping per window is the median of `ntp − rtp` over the reports
  received in it, so a sender whose reports drift apart drifts here too.
* **arrival** (what a naive player shows: every frame at once when it arrives).

The offset is the lag that maximises the correlation of the picture's mouth signal with the loudness, both held
over their frames' durations on a 2 ms grid; positive = the picture comes after its sound. Drift = offset in the
last window − offset in the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRID_S = 0.002
COARSE_MS = 10
FINE_MS = 1


@dataclass
class Stream:
    """What the client received of one stream (one row per decoded frame), in arrival order."""

    media_s: np.ndarray
    arrival_s: np.ndarray
    value: np.ndarray
    hold_s: float  # how long one frame covers: 0.02 for a 20 ms Opus frame, 0.04 for a 25 fps picture

    def __post_init__(self) -> None:
        self.media_s = np.asarray(self.media_s, float)
        self.arrival_s = np.asarray(self.arrival_s, float)
        self.value = np.asarray(self.value, float)
        if not (len(self.media_s) == len(self.arrival_s) == len(self.value)):
            raise ValueError("media_s, arrival_s and value must have one entry per frame")

    def take(self, mask: np.ndarray) -> Stream:
        return Stream(self.media_s[mask], self.arrival_s[mask], self.value[mask], self.hold_s)


@dataclass
class Reports:
    """RTCP sender reports of one stream: the sender's wall time and the media time (same origin as `Stream`)."""

    sender_s: np.ndarray
    media_s: np.ndarray

    def __post_init__(self) -> None:
        self.sender_s = np.asarray(self.sender_s, float)
        self.media_s = np.asarray(self.media_s, float)

    def mapping(self, t0: float, t1: float) -> float | None:
        """sender time − media time, the median over the reports sent in [t0, t1) (all reports if none were)."""
        if not len(self.sender_s):
            return None
        inside = (self.sender_s >= t0) & (self.sender_s < t1)
        d = (self.sender_s - self.media_s)[inside if inside.any() else slice(None)]
        return float(np.median(d))


def _held(times: np.ndarray, values: np.ndarray, hold_s: float, grid: np.ndarray) -> np.ndarray:
    """Each frame's value held from its time for `hold_s` (NaN where no frame covers the grid point)."""
    order = np.argsort(times, kind="stable")
    t, v = times[order], values[order]
    i = np.searchsorted(t, grid, side="right") - 1
    ok = i >= 0
    out = np.full(len(grid), np.nan)
    out[ok] = v[i[ok]]
    out[ok] = np.where(grid[ok] - t[i[ok]] < hold_s + 1e-9, out[ok], np.nan)
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 50:
        return float("nan")
    x, y = a[ok], b[ok]
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def best_lag(
    a_t: np.ndarray,
    a_v: np.ndarray,
    a_hold: float,
    v_t: np.ndarray,
    v_v: np.ndarray,
    v_hold: float,
    max_lag_ms: int = 1500,
) -> dict:
    """The lag (ms) by which the picture signal trails the audio one, its correlation and its margin.

    A coarse search over ±`max_lag_ms` in 10 ms steps, then 1 ms steps around the best. The margin is the peak
    minus the median correlation over the coarse lags: near 0 means there was nothing to line up."""
    if len(a_t) < 10 or len(v_t) < 10:
        return {"lag_ms": None, "corr": None, "margin": None}
    grid = np.arange(a_t.min(), a_t.max() + a_hold, GRID_S)
    heard = _held(a_t, a_v, a_hold, grid)

    def corr_at(lag_ms: float) -> float:
        # the picture shown at g + lag belongs to the sound at g
        return _corr(heard, _held(v_t, v_v, v_hold, grid + lag_ms / 1000))

    coarse = {lag: corr_at(lag) for lag in range(-max_lag_ms, max_lag_ms + 1, COARSE_MS)}
    valid = {k: c for k, c in coarse.items() if not np.isnan(c)}
    if not valid:
        return {"lag_ms": None, "corr": None, "margin": None}
    top = max(valid, key=valid.get)
    fine = {lag: corr_at(lag) for lag in range(top - COARSE_MS, top + COARSE_MS + 1, FINE_MS)}
    fine = {k: c for k, c in fine.items() if not np.isnan(c)}
    # The picture holds for 40 ms, so correlation is flat-topped over a few ms: take the middle of the plateau.
    peak = max(fine.values())
    plateau = [k for k, c in fine.items() if c >= peak - 1e-3]
    lag = float(np.mean(plateau))
    return {
        "lag_ms": round(lag, 1),
        "corr": round(peak, 3),
        "margin": round(peak - float(np.median(list(valid.values()))), 3),
    }


def window_stats(audio: Stream, video: Stream, fps: float = 25.0) -> dict:
    """Clock rates, stalls and repeats inside one window (arrival order)."""
    out: dict = {"video_frames": int(len(video.media_s)), "audio_frames": int(len(audio.media_s))}
    if len(audio.media_s) < 2 or len(video.media_s) < 2:
        return out
    audio_media_s = len(audio.media_s) * audio.hold_s  # what was played, not the span (drops do not count)
    arrival_span = float(audio.arrival_s.max() - audio.arrival_s.min()) + audio.hold_s
    v_span = float(video.arrival_s.max() - video.arrival_s.min()) + video.hold_s
    ticks = np.diff(video.media_s) * fps
    a_steps = np.diff(audio.media_s) / audio.hold_s
    v_gaps = np.diff(video.arrival_s)
    out.update(
        {
            # frames of picture per second of sound received: 25 when both streams keep one clock
            "video_fps_per_audio_s": round(len(video.media_s) / audio_media_s, 3),
            "audio_media_per_arrival_s": round(audio_media_s / arrival_span, 4),
            "video_fps_by_arrival": round(len(video.media_s) / v_span, 3),
            "video_media_per_arrival_s": round(float(video.media_s.max() - video.media_s.min()) / v_span, 4),
            # a tick the receiver never got (dropped by the sender's queue or lost)
            "video_skipped_ticks": int(np.sum(np.clip(np.round(ticks) - 1, 0, None))),
            "video_repeats": int(np.sum(np.round(ticks) <= 0)),  # same or earlier timestamp again
            "video_stalls_over_100ms": int(np.sum(v_gaps > 0.1)),
            "video_max_gap_ms": round(1000 * float(v_gaps.max()), 1),
            "audio_gaps": int(np.sum(np.round(a_steps) > 1)),
            "audio_repeats": int(np.sum(np.round(a_steps) <= 0)),
            "audio_max_arrival_gap_ms": round(1000 * float(np.diff(audio.arrival_s).max()), 1),
        }
    )
    return out


def measure(
    audio: Stream,
    video: Stream,
    audio_sr: Reports,
    video_sr: Reports,
    window_s: float = 60.0,
    fps: float = 25.0,
    max_lag_ms: int = 1500,
) -> dict:
    """Per window of `window_s` arrival time from the first received audio: the offset by both clocks, the
    clock rates and the stalls; and the drift (last full window − first)."""
    if len(audio.arrival_s) < 10 or len(video.arrival_s) < 10:
        raise ValueError("too few frames received to measure an offset")
    t_start = float(audio.arrival_s.min())
    t_end = float(max(audio.arrival_s.max(), video.arrival_s.max()))
    n = max(1, int(np.floor((t_end - t_start) / window_s + 1e-9)))
    windows = []
    for k in range(n):
        t0, t1 = t_start + k * window_s, t_start + (k + 1) * window_s
        a = audio.take((audio.arrival_s >= t0) & (audio.arrival_s < t1))
        v = video.take((video.arrival_s >= t0) & (video.arrival_s < t1))
        row = {"window": k, "t0_s": round(k * window_s, 1), "t1_s": round((k + 1) * window_s, 1)}
        ma, mv = audio_sr.mapping(t0, t1), video_sr.mapping(t0, t1)
        if ma is not None and mv is not None:
            rtp = best_lag(a.media_s + ma, a.value, a.hold_s, v.media_s + mv, v.value, v.hold_s, max_lag_ms)
        else:
            rtp = {"lag_ms": None, "corr": None, "margin": None}
        arr = best_lag(a.arrival_s, a.value, a.hold_s, v.arrival_s, v.value, v.hold_s, max_lag_ms)
        row.update({f"rtp_{k_}": v_ for k_, v_ in rtp.items()})
        row.update({f"arrival_{k_}": v_ for k_, v_ in arr.items()})
        row.update(window_stats(a, v, fps))
        windows.append(row)
    first, last = windows[0], windows[-1]

    def drift(key: str) -> float | None:
        if first[key] is None or last[key] is None:
            return None
        return round(last[key] - first[key], 1)

    return {
        "window_s": window_s,
        "windows": windows,
        "first": {k: first[k] for k in ("rtp_lag_ms", "rtp_corr", "arrival_lag_ms", "arrival_corr")},
        "last": {k: last[k] for k in ("rtp_lag_ms", "rtp_corr", "arrival_lag_ms", "arrival_corr")},
        "drift_rtp_ms": drift("rtp_lag_ms"),
        "drift_arrival_ms": drift("arrival_lag_ms"),
        "totals": {
            k: int(sum(w.get(k, 0) for w in windows))
            for k in (
                "video_frames",
                "audio_frames",
                "video_skipped_ticks",
                "video_repeats",
                "video_stalls_over_100ms",
                "audio_gaps",
                "audio_repeats",
            )
        },
    }


def table(result: dict) -> str:
    """The per-window table the bench prints."""
    head = (
        f"{'window':>8} {'rtp lag':>8} {'corr':>5} {'arrival lag':>11} {'corr':>5} "
        f"{'v fps/a s':>9} {'skipped':>7} {'stalls':>6} {'a gaps':>6}"
    )
    lines = [head, "-" * len(head)]

    def f(x, spec):
        return format(x, spec) if x is not None else "-"

    for w in result["windows"]:
        lines.append(
            f"{w['t0_s']:>4.0f}-{w['t1_s']:<3.0f} {f(w['rtp_lag_ms'], '>8.1f')} {f(w['rtp_corr'], '>5.2f')} "
            f"{f(w['arrival_lag_ms'], '>11.1f')} {f(w['arrival_corr'], '>5.2f')} "
            f"{f(w.get('video_fps_per_audio_s'), '>9.2f')} {w.get('video_skipped_ticks', 0):>7} "
            f"{w.get('video_stalls_over_100ms', 0):>6} {w.get('audio_gaps', 0):>6}"
        )
    lines.append(
        f"drift (last - first window): RTP {result['drift_rtp_ms']} ms, arrival {result['drift_arrival_ms']} ms"
    )
    return "\n".join(lines)
