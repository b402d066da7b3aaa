"""Audio → mouth state, one per 25 fps video frame, for the weight-free CPU renderer.

The mouth state is read off the speech signal with classical measures, no learned weights:

* openness from loudness: the level of the frame against a running speech reference (so the mapping
  does not depend on recording gain), gated so silence and room noise keep the mouth shut, and
  lowered on fricatives (/s/, /f/, /sh/ are made with the teeth nearly together);
* no faster than real lips: the opening changes by a bounded amount per frame, more at a plosive release;
* width and roundness from spectral balance of voiced sound: front vowels (/i/, /e/) put their second
  formant high (energy 1.7–3.5 kHz), rounded back vowels (/u/, /o/) keep nearly all energy below 1.7 kHz.

Short-time spectra are taken every 10 ms over 20 ms Hann windows. A video frame's state averages the
spectra whose windows are centred within ±40 ms of the frame's centre (Gaussian weights), so a frame
can be emitted 30 ms after its own audio has arrived (within one frame): causal with a bounded look-ahead.
Every step is sequential per spectrum or per frame, so any chunking of the input gives the same states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from workbench.config import SAMPLE_RATE, SAMPLES_PER_FRAME
from workbench.lipsync.base import AudioFrontend

HOP = SAMPLE_RATE // 100  # 10 ms between short-time spectra
WIN = 2 * HOP  # 20 ms analysis window
N_FFT = 512
HOPS_PER_FRAME = SAMPLES_PER_FRAME // HOP  # 4
# Frame k is centred on the centre of spectrum 4k+1 (window [160(4k+1), 160(4k+1)+320) is centred at 640k+320).
SMOOTH_RADIUS = 4  # spectra either side of the centre: ±40 ms
SMOOTH_SIGMA = 2.0  # in spectra: 20 ms
# Frame k needs spectrum 4k+1+SMOOTH_RADIUS, which ends 480 samples (30 ms) after frame k ends.
LOOKAHEAD_SAMPLES = (1 + SMOOTH_RADIUS) * HOP + WIN - SAMPLES_PER_FRAME
LOOKAHEAD_FRAMES = -(-LOOKAHEAD_SAMPLES // SAMPLES_PER_FRAME)  # 1

_FREQS = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
_BANDS = {  # Hz
    "low": (250.0, 900.0),  # first formant
    "mid": (900.0, 1700.0),  # second formant of back vowels
    "high": (1700.0, 3500.0),  # second/third formant of front vowels
    "fric": (3500.0, 8000.0),  # frication noise
}


def _bin_range(lo_hz: float, hi_hz: float) -> slice:
    idx = np.flatnonzero((_FREQS >= lo_hz) & (_FREQS < hi_hz))
    return slice(int(idx[0]), int(idx[-1]) + 1)


# Contiguous bin ranges summed row by row (not a matrix product, whose summation order depends on the
# batch size): that keeps streamed and whole-file states bit-identical.
_BAND_BINS = [_bin_range(lo, hi) for lo, hi in _BANDS.values()]
_SPEECH_BINS = _bin_range(80.0, 7000.0)


class AudioFormatError(ValueError):
    """The audio handed to the mouth frontend is not mono samples at a usable rate."""


@dataclass(frozen=True)
class MouthState:
    """The shape the lower face should take in one video frame.

    open: 0 (lips together) .. 1 (jaw dropped for a loud open vowel).
    width: 0 (neutral) .. 1 (lips spread, as in /i/).
    round: 0 (neutral) .. 1 (lips rounded and pushed forward, as in /u/, /o/).
    """

    open: float = 0.0
    width: float = 0.0
    round: float = 0.0

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.open, self.width, self.round)


SILENT = MouthState()


@dataclass(frozen=True)
class MouthParams:
    """How loudness and spectral balance map to a mouth state (measured on English and Chinese speech)."""

    gate_db: float = -55.0  # below this absolute level (dBFS) the mouth is shut whatever the reference
    range_db: float = 36.0  # the mouth starts to open this far below the running speech reference
    curve: float = 2.5  # >1: quiet speech opens the mouth less than linearly
    ref_init_db: float = -20.0  # running reference before any speech has been heard
    ref_floor_db: float = -40.0  # the reference never decays below this, so pauses do not amplify noise
    ref_decay_db: float = 0.05  # per frame (1.25 dB/s): the reference follows a quieter speaker within seconds
    fric_damp: float = 0.7  # how much a fully fricative frame closes the mouth
    balance_alpha: float = 1.0 / 75.0  # running speaker average of the band balances, ~3 s of voiced frames
    balance_init_round_db: float = -10.0  # starting averages (measured on English and Chinese speech)
    balance_init_spread_db: float = -12.0
    balance_knee_db: float = 2.0  # deviation from the average before the lips start to spread or round
    balance_span_db: float = 8.0  # further deviation for fully spread or rounded
    # Lips and jaw have mass: per 40 ms frame the opening changes at most this much (0..1 scale). A jaw drops
    # from closed to a loud vowel in about 120 ms and closes about as fast; a plosive release (/p/, /b/, /t/:
    # loudness jumping from near silence) snaps the lips apart faster.
    open_rate: float = 0.35
    close_rate: float = 0.3
    plosive_rate: float = 0.7
    plosive_jump_db: float = 12.0  # level rise within one frame that counts as a release


def _smoothing_weights() -> np.ndarray:
    k = np.arange(-SMOOTH_RADIUS, SMOOTH_RADIUS + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / SMOOTH_SIGMA) ** 2)
    return w / w.sum()


_WEIGHTS = _smoothing_weights()
_WINDOW = signal.get_window("hann", WIN, fftbins=True).astype(np.float64)
_POWER_SCALE = 2.0 / (N_FFT * float(np.sum(_WINDOW**2)))


class StreamResampler:
    """Chunk-invariant resampling to 16 kHz: an anti-aliasing IIR low-pass with carried state, then linear
    interpolation on an exact rational time grid. Good enough for loudness and band balance, and cheap."""

    def __init__(self, sample_rate: int, target_rate: int = SAMPLE_RATE):
        if sample_rate <= 0:
            raise AudioFormatError(f"sample rate must be positive, got {sample_rate}")
        self.sr_in = int(sample_rate)
        self.sr_out = int(target_rate)
        cutoff = 0.45 * min(self.sr_in, self.sr_out)
        self._sos = (
            signal.butter(8, cutoff, btype="low", fs=self.sr_in, output="sos") if self.sr_in > self.sr_out else None
        )
        self._zi = np.zeros((self._sos.shape[0], 2)) if self._sos is not None else None
        self._tail = np.zeros(0, dtype=np.float64)  # filtered input not yet fully consumed
        self._tail_start = 0  # absolute index of _tail[0] in the filtered input
        self._n_out = 0  # output samples emitted so far

    def _filter(self, x: np.ndarray) -> np.ndarray:
        if self._sos is None:
            return x
        y, self._zi = signal.sosfilt(self._sos, x, zi=self._zi)
        return y

    def _emit(self, final: bool) -> np.ndarray:
        # Output m sits at input position m * sr_in / sr_out; it needs inputs floor(pos) and floor(pos)+1.
        n_in = self._tail_start + len(self._tail)
        if final:
            m_end = (n_in * self.sr_out + self.sr_in - 1) // self.sr_in if n_in else 0
        else:
            m_end = max(self._n_out, ((n_in - 1) * self.sr_out) // self.sr_in + 1) if n_in else 0
        m = np.arange(self._n_out, m_end, dtype=np.int64)
        num = m * self.sr_in
        idx = num // self.sr_out
        frac = (num % self.sr_out).astype(np.float64) / self.sr_out
        local = idx - self._tail_start
        padded = np.concatenate([self._tail, self._tail[-1:] if len(self._tail) else np.zeros(1)])
        a = padded[np.clip(local, 0, len(padded) - 1)]
        b = padded[np.clip(local + 1, 0, len(padded) - 1)]
        out = a + frac * (b - a)
        self._n_out = int(m_end)
        # keep only what the next output still needs
        keep_from = (self._n_out * self.sr_in) // self.sr_out
        drop = max(0, min(len(self._tail), keep_from - self._tail_start))
        self._tail = self._tail[drop:]
        self._tail_start += drop
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        if self.sr_in == self.sr_out:
            return np.asarray(x, dtype=np.float64)
        self._tail = np.concatenate([self._tail, self._filter(np.asarray(x, dtype=np.float64))])
        return self._emit(final=False)

    def flush(self) -> np.ndarray:
        if self.sr_in == self.sr_out:
            return np.zeros(0)
        return self._emit(final=True)


class MouthFrontend(AudioFrontend):
    """Incremental 16 kHz audio → `MouthState` per 25 fps frame, one frame of look-ahead.

    `push` returns the states of every frame whose look-ahead is complete; `flush` pads the stream with
    silence to finish the last partial frame, so a clip of n samples gives ceil(n / 640) states.
    `sample_rate` other than 16 kHz is accepted and resampled here, chunk-invariantly.
    """

    lookahead_frames = LOOKAHEAD_FRAMES

    def __init__(self, sample_rate: int = SAMPLE_RATE, params: MouthParams | None = None):
        self.params = params or MouthParams()
        self._resampler = StreamResampler(sample_rate) if sample_rate != SAMPLE_RATE else None
        self._buf = np.zeros(0, dtype=np.float64)  # samples from _buf_start on
        self._buf_start = 0
        self._n_samples = 0  # 16 kHz samples received
        # Band powers of each short-time spectrum; spectra before the start are silence.
        # Frame 0 is centred on spectrum 1 and reaches back to spectrum 1 - SMOOTH_RADIUS.
        self._first_spectrum = 1 - SMOOTH_RADIUS  # index of self._spectra[0]
        self._spectra: list[np.ndarray] = [np.zeros(len(_BANDS) + 1)] * (SMOOTH_RADIUS - 1)
        self._n_spectra = 0  # index of the next real spectrum to compute
        self._next_frame = 0
        self._ref_db = self.params.ref_init_db
        self._round_mean = self.params.balance_init_round_db
        self._spread_mean = self.params.balance_init_spread_db
        self._prev_open = 0.0
        self._prev_level = -120.0
        self._flushed = False

    # --- feature extraction -----------------------------------------------------------------
    def _compute_spectra(self) -> None:
        """Band powers for every 20 ms window that the buffer now covers."""
        available = self._buf_start + len(self._buf)
        h0 = self._n_spectra
        h1 = (available - WIN) // HOP + 1 if available >= WIN else 0
        if h1 <= h0:
            return
        starts = np.arange(h0, h1) * HOP - self._buf_start
        frames = self._buf[starts[:, None] + np.arange(WIN)[None, :]] * _WINDOW
        # Scaled so a band's sum is the mean-square of the signal in that band (Parseval, one-sided spectrum).
        spec = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2 * _POWER_SCALE
        powers = np.stack([spec[:, _SPEECH_BINS].sum(axis=1)] + [spec[:, b].sum(axis=1) for b in _BAND_BINS], axis=1)
        self._spectra.extend(powers)
        self._n_spectra = h1
        # Samples before the next window's start are no longer needed.
        drop = h1 * HOP - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start += drop

    def _frame_state(self, k: int) -> MouthState:
        centre = HOPS_PER_FRAME * k + 1
        lo = centre - SMOOTH_RADIUS - self._first_spectrum
        window = np.stack(self._spectra[lo : lo + 2 * SMOOTH_RADIUS + 1])
        p = _WEIGHTS @ window  # [total, low, mid, high, fric]
        p_total, p_low, p_mid, p_high, p_fric = (float(v) for v in p)
        # Spectra no longer needed by later frames are dropped, so memory stays flat on long streams.
        keep_from = centre + HOPS_PER_FRAME - SMOOTH_RADIUS - self._first_spectrum
        if keep_from > 0:
            del self._spectra[:keep_from]
            self._first_spectrum += keep_from
        return self._state_from_powers(p_total, p_low, p_mid, p_high, p_fric)

    def _state_from_powers(self, total: float, low: float, mid: float, high: float, fric: float) -> MouthState:
        prm = self.params
        level = 10.0 * np.log10(total + 1e-12)
        self._ref_db = max(self._ref_db - prm.ref_decay_db, level, prm.ref_floor_db)
        x = (level - (self._ref_db - prm.range_db)) / prm.range_db
        # Soft gate: fades from 0 at gate-6 dB to 1 at the gate level.
        gate = float(np.clip((level - prm.gate_db + 6.0) / 6.0, 0.0, 1.0))
        voiced = low + mid + high
        fricness = fric / (voiced + fric + 1e-12)
        openness = float(np.clip(x, 0.0, 1.0)) ** prm.curve * gate * (1.0 - prm.fric_damp * fricness)
        openness = float(np.clip(openness, 0.0, 1.0))
        # Rate limits (sequential per frame, so any chunking gives the same states).
        up = prm.plosive_rate if level - self._prev_level >= prm.plosive_jump_db else prm.open_rate
        openness = float(np.clip(openness, self._prev_open - prm.close_rate, self._prev_open + up))
        self._prev_open, self._prev_level = openness, level
        # Lip shape only means something while sound is voiced and the mouth is moving.
        shape_gain = min(1.0, 2.5 * openness) * (1.0 - fricness)
        eps = 1e-12
        round_bal = 10.0 * np.log10((mid + high + eps) / (low + eps))  # low for /u/, /o/
        spread_bal = 10.0 * np.log10((high + eps) / (low + mid + eps))  # high for /i/, /e/
        if shape_gain > 0.5:
            # Balances are judged against this speaker's running average, so voice and microphone cancel.
            a = prm.balance_alpha
            self._round_mean += a * (round_bal - self._round_mean)
            self._spread_mean += a * (spread_bal - self._spread_mean)
        knee, span = prm.balance_knee_db, prm.balance_span_db
        width = float(np.clip((spread_bal - self._spread_mean - knee) / span, 0.0, 1.0)) * shape_gain
        # Wide-open vowels are not rounded, so rounding fades as the jaw drops.
        rnd = (
            float(np.clip((self._round_mean - round_bal - knee) / span, 0.0, 1.0)) * shape_gain * (1.0 - 0.5 * openness)
        )
        return MouthState(open=openness, width=width, round=rnd)

    # --- AudioFrontend ----------------------------------------------------------------------
    def _take(self, audio: np.ndarray) -> None:
        x = np.asarray(audio)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise AudioFormatError(f"expected mono samples (n,), got shape {x.shape}; mix to mono first")
        if np.issubdtype(x.dtype, np.integer):
            raise AudioFormatError(f"expected float samples in [-1, 1], got {x.dtype}; scale integer PCM first")
        x = x.astype(np.float64)
        if not np.all(np.isfinite(x)):
            raise AudioFormatError("audio contains NaN or infinite samples")
        if self._resampler is not None:
            x = self._resampler.push(x)
        self._append(x)

    def _append(self, x: np.ndarray) -> None:
        if len(x):
            self._buf = np.concatenate([self._buf, x])
            self._n_samples += len(x)

    def _emit_ready(self, n_frames_total: int | None) -> list[MouthState]:
        self._compute_spectra()
        out = []
        while True:
            k = self._next_frame
            if n_frames_total is not None and k >= n_frames_total:
                break
            # frame k needs spectra up to 4k+1+SMOOTH_RADIUS
            if HOPS_PER_FRAME * k + 1 + SMOOTH_RADIUS >= self._n_spectra:
                break
            out.append(self._frame_state(k))
            self._next_frame += 1
        return out

    def push(self, audio: np.ndarray) -> list[MouthState]:
        if self._flushed:
            raise RuntimeError("this frontend was flushed; make a new one for a new stream")
        self._take(audio)
        return self._emit_ready(None)

    def flush(self) -> list[MouthState]:
        if self._flushed:
            return []
        if self._resampler is not None:
            self._append(self._resampler.flush())
        self._flushed = True
        n_frames = -(-self._n_samples // SAMPLES_PER_FRAME)
        # Silence after the end completes the last frame and its look-ahead.
        needed = (n_frames + LOOKAHEAD_FRAMES) * SAMPLES_PER_FRAME + WIN
        pad = needed - (self._buf_start + len(self._buf))
        if pad > 0:
            self._buf = np.concatenate([self._buf, np.zeros(pad)])
        return self._emit_ready(n_frames)

    @property
    def frames_emitted(self) -> int:
        return self._next_frame
