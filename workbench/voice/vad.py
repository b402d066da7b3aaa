"""Voice activity from Silero VAD (the ONNX model in the `silero-vad` wheel) and turns built from it.

`SileroVAD` scores 32 ms windows of 16 kHz audio (speech probability 0..1) with numpy and onnxruntime
only; `TurnDetector` takes the Realtime microphone format (int16, 24 kHz), keeps the current turn's
audio and reports `speech_started`, `pause` (the first short silence: a cue to start transcribing
before the turn is over), `resumed` and `speech_stopped` (the end of turn after the hang-over).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soxr

from workbench.config import REALTIME_SAMPLE_RATE

VAD_RATE = 16_000  # Silero's native rate
WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
WINDOW_MS = 1000 * WINDOW // VAD_RATE
_CONTEXT = 64  # samples of the previous window the model sees in front of each new one


class VADError(RuntimeError):
    """The VAD model is missing or onnxruntime cannot run it."""


def silero_model_path() -> Path:
    try:
        import silero_vad
    except ImportError as exc:
        raise VADError("silero-vad is not installed: pip install silero-vad") from exc
    path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    if not path.exists():
        raise VADError(f"the Silero VAD model is missing from the wheel: {path}")
    return path


class SileroVAD:
    """Speech probability per 32 ms window; keeps the model's recurrent state between calls."""

    _session = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.sess = self._shared_session()
        self.reset()

    @classmethod
    def _shared_session(cls):
        # One ONNX session per process: it is stateless (the state is an input), ~2 MB, and safe to
        # run from several threads; each detector keeps its own recurrent state.
        with cls._lock:
            if cls._session is None:
                try:
                    import onnxruntime as ort
                except ImportError as exc:
                    raise VADError("onnxruntime is not installed: pip install onnxruntime") from exc
                so = ort.SessionOptions()
                so.intra_op_num_threads = so.inter_op_num_threads = 1  # ~0.2 ms a window: one thread is plenty
                so.log_severity_level = 3
                cls._session = ort.InferenceSession(str(silero_model_path()), so, providers=["CPUExecutionProvider"])
            return cls._session

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(_CONTEXT, np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """P(speech) for one window of `WINDOW` float32 samples at 16 kHz."""
        x = np.concatenate([self._context, np.asarray(window, np.float32)])[None, :]
        prob, self._state = self.sess.run(
            None, {"input": x, "state": self._state, "sr": np.array(VAD_RATE, dtype=np.int64)}
        )
        self._context = x[0, -_CONTEXT:]
        return float(prob[0, 0])


TurnEventKind = Literal["speech_started", "pause", "resumed", "speech_stopped"]


@dataclass
class TurnEvent:
    kind: TurnEventKind
    ms: int  # position in the microphone stream (ms since the first sample)


@dataclass
class Turn:
    """A finished turn: its audio (16 kHz float32, with the lead-in before the detected start)."""

    audio: np.ndarray
    speech_ms: int  # voiced time inside the turn
    total_ms: int  # whole turn, start to end of speech, before any bounding
    bounded: bool  # True when only the last `max_turn_s` were kept


class TurnDetector:
    """Turns from 24 kHz int16 microphone audio: start after `start_ms` of speech, end after `hangover_ms` of silence.

    Hysteresis as in Silero's own `get_speech_timestamps`: a window is speech above `threshold` and
    silence below `threshold - 0.15`. The audio of the turn is kept, bounded to the last `max_turn_s`
    seconds (Whisper's window is 30 s, and a long monologue must not make the answer wait); a turn that
    goes on for `force_end_s` without a pause ends there, so nothing waits forever.
    """

    def __init__(
        self,
        vad: SileroVAD | None = None,
        *,
        threshold: float = 0.5,
        start_ms: int = 96,
        hangover_ms: int = 400,
        pause_ms: int = 160,
        prefix_ms: int = 300,
        max_turn_s: float = 15.0,
        force_end_s: float = 60.0,
        rate: int = REALTIME_SAMPLE_RATE,
    ):
        self.vad = vad or SileroVAD()
        self.threshold, self.neg_threshold = threshold, max(0.01, threshold - 0.15)
        self.start_n = max(1, round(start_ms / WINDOW_MS))
        self.hangover_n = max(1, round(hangover_ms / WINDOW_MS))
        self.pause_n = max(1, min(self.hangover_n - 1, round(pause_ms / WINDOW_MS)))
        self.hangover_ms = self.hangover_n * WINDOW_MS
        self.prefix_n = max(0, round(prefix_ms / WINDOW_MS))
        self.max_turn_n = max(1, round(max_turn_s * 1000 / WINDOW_MS))
        self.force_end_n = max(self.max_turn_n, round(force_end_s * 1000 / WINDOW_MS))
        self.max_turn_s = max_turn_s
        self._resampler = soxr.ResampleStream(rate, VAD_RATE, 1, dtype="float32")
        self._pending = np.zeros(0, np.float32)
        self._prefix: deque[np.ndarray] = deque(maxlen=self.prefix_n + self.start_n)
        self._turn: deque[np.ndarray] = deque(maxlen=self.max_turn_n)
        self.speaking = False
        self.paused = False
        self._voiced = self._silent = 0
        self._turn_windows = self._turn_voiced = 0
        self.windows = 0
        self.last_prob = 0.0
        self.finished: Turn | None = None  # set by speech_stopped; the caller takes it

    @property
    def ms(self) -> int:
        return self.windows * WINDOW_MS

    def process(self, pcm: np.ndarray) -> list[TurnEvent]:
        x = np.asarray(pcm, np.float32) / 32768.0
        self._pending = np.concatenate([self._pending, self._resampler.resample_chunk(x)])
        out: list[TurnEvent] = []
        while len(self._pending) >= WINDOW:
            w, self._pending = self._pending[:WINDOW], self._pending[WINDOW:]
            self.windows += 1
            self._step(w, out)
        return out

    def _step(self, w: np.ndarray, out: list[TurnEvent]) -> None:
        p = self.last_prob = self.vad(w)
        if not self.speaking:
            self._prefix.append(w)
            self._voiced = self._voiced + 1 if p >= self.threshold else 0
            if self._voiced >= self.start_n:
                self.speaking, self.paused = True, False
                self._turn.clear()
                self._turn.extend(self._prefix)
                self._prefix.clear()
                self._turn_windows, self._turn_voiced, self._silent = len(self._turn), self._voiced, 0
                out.append(TurnEvent("speech_started", self.ms - self.start_n * WINDOW_MS))
            return
        self._turn.append(w)
        self._turn_windows += 1
        if p >= self.threshold:
            self._turn_voiced += 1
            self._silent = 0
            if self.paused:
                self.paused = False
                out.append(TurnEvent("resumed", self.ms))
        elif p < self.neg_threshold:
            self._silent += 1
        if self._silent == self.pause_n and not self.paused:
            self.paused = True
            out.append(TurnEvent("pause", self.ms - self._silent * WINDOW_MS))
        if self._silent >= self.hangover_n or self._turn_windows >= self.force_end_n:
            self.finished = self.snapshot()
            self.speaking = self.paused = False
            self._voiced = self._silent = 0
            self._turn.clear()
            out.append(TurnEvent("speech_stopped", self.ms))

    def snapshot(self) -> Turn:
        """The current turn's audio so far (for an early transcription at a pause)."""
        audio = np.concatenate(list(self._turn)) if self._turn else np.zeros(0, np.float32)
        return Turn(
            audio=audio,
            speech_ms=self._turn_voiced * WINDOW_MS,
            total_ms=self._turn_windows * WINDOW_MS,
            bounded=self._turn_windows > len(self._turn),
        )


class EnergyVAD:
    """Speech start/stop on 24 kHz PCM16 from its loudness over 20 ms windows, with a noise floor."""

    def __init__(
        self,
        threshold_db: float = -38.0,
        margin_db: float = 12.0,
        start_ms: int = 120,
        stop_ms: int = 500,
        rate: int = REALTIME_SAMPLE_RATE,
    ):
        self.threshold_db, self.margin_db = threshold_db, margin_db
        self.win = rate // 50
        self.start_n, self.stop_n = max(1, start_ms // 20), max(1, stop_ms // 20)
        self.floor_db = -70.0
        self.speaking = False
        self._loud = self._quiet = 0
        self._buf = np.zeros(0, np.float32)
        self.ms = 0

    def process(self, pcm: np.ndarray) -> list[tuple[str, int]]:
        """Events ("speech_started" | "speech_stopped", ms since the first sample) found in `pcm`."""
        self._buf = np.concatenate([self._buf, np.asarray(pcm, np.float32) / 32768.0])
        out = []
        while len(self._buf) >= self.win:
            w, self._buf = self._buf[: self.win], self._buf[self.win :]
            self.ms += 20
            db = 10 * np.log10(float(np.mean(w.astype(np.float64) ** 2)) + 1e-10)
            loud = db > max(self.threshold_db, self.floor_db + self.margin_db)
            if not loud:
                self.floor_db = 0.95 * self.floor_db + 0.05 * db if db > self.floor_db else db
            if loud:
                self._loud, self._quiet = self._loud + 1, 0
                if not self.speaking and self._loud >= self.start_n:
                    self.speaking = True
                    out.append(("speech_started", self.ms - 20 * self.start_n))
            else:
                self._quiet, self._loud = self._quiet + 1, 0
                if self.speaking and self._quiet >= self.stop_n:
                    self.speaking = False
                    out.append(("speech_stopped", self.ms))
        return out
