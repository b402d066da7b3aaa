"""Speakers for the local voice: the neural hibari-tts voice, espeak-ng as the fallback.

A `Speaker` turns one sentence into int16 mono PCM at 24 kHz (the Realtime output rate) and is safe to
share between sessions (one synthesis at a time). `load_speaker("heart")` gives the neural voice, or
espeak-ng with a note saying why when the neural voice cannot load; `"espeak"` / `"espeak:en-us"`
ask for espeak-ng directly. Only hibari's bundled voice ("heart") is used unless another one is already
in hibari's cache: nothing is downloaded at run time.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator

import numpy as np

from workbench.config import REALTIME_SAMPLE_RATE
from workbench.voice import espeak
from workbench.voice.espeak import TTSError

NEURAL_DEFAULT = "heart"
LEAD_KEEP_S = 0.03  # hibari starts each sentence with ~0.3 s of silence; keep 30 ms of it
LEAD_FLOOR = 0.02  # of the sentence's peak: below this a sample counts as silence


class Speaker(ABC):
    name: str = "speaker"
    rate = REALTIME_SAMPLE_RATE

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.load_s = 0.0

    @abstractmethod
    def _synthesize(self, sentence: str) -> np.ndarray: ...

    def synthesize(self, text: str) -> np.ndarray:
        """`text` (one sentence or several) as int16 mono at 24 kHz."""
        parts = list(self.sentences(text))
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def sentences(self, text: str) -> Iterator[np.ndarray]:
        """One int16 array per sentence, each as soon as it is synthesised (the first can play meanwhile)."""
        text = text.strip()
        if len(text) > espeak.MAX_TTS_CHARS:
            raise TTSError(f"text too long for speech: {len(text)} characters (limit {espeak.MAX_TTS_CHARS})")
        for sentence in espeak.split_sentences(text):
            with self._lock:
                pcm = self._synthesize(sentence)
            if len(pcm):
                yield pcm


class NeuralSpeaker(Speaker):
    """hibari-tts (Apache-2.0): a 7.9 MB ONNX model with its own phonemiser, 24 kHz."""

    def __init__(self, voice: str = NEURAL_DEFAULT, speed: float = 1.0, threads: int = 1):
        super().__init__()
        try:
            from hibari import Hibari
            from hibari.voices import VOICES, voice_path
        except ImportError as exc:
            raise TTSError("hibari-tts is not installed: pip install hibari-tts") from exc
        if voice not in VOICES:
            raise TTSError(f"unknown neural voice {voice!r}; available: {', '.join(VOICES)}")
        try:
            path = voice_path(voice, download_missing=False)
        except FileNotFoundError as exc:
            raise TTSError(
                f"neural voice {voice!r} is not installed (only {NEURAL_DEFAULT!r} ships in the wheel; "
                "others would need a download, which the workbench never does at run time)"
            ) from exc
        if not 0.5 <= speed <= 2.0:
            raise TTSError("speed must be between 0.5 and 2.0")
        t0 = time.perf_counter()
        try:
            self.model = Hibari(voice=voice, model=path, threads=threads)
            self.model("Ready.")  # loads the phonemiser and warms the session: the first reply is not slower
        except Exception as exc:  # onnxruntime or the G2P assets: report, and let the caller fall back
            raise TTSError(f"the neural voice failed to load: {exc.__class__.__name__}: {exc}") from exc
        self.load_s = time.perf_counter() - t0
        self.voice, self.speed = voice, speed
        self.name = f"hibari {voice}"
        self._seed = 0

    def _synthesize(self, sentence: str) -> np.ndarray:
        try:
            wav = self.model(sentence, speed=self.speed, seed=self._seed)
        except Exception as exc:
            raise TTSError(f"neural voice failed on {sentence[:40]!r}: {exc}") from exc
        if self.model.sample_rate != self.rate:
            import soxr

            wav = soxr.resample(wav, self.model.sample_rate, self.rate)
        return _to_int16(trim_lead(wav, self.rate))


class EspeakSpeaker(Speaker):
    """Debian's espeak-ng (robotic but always there), resampled to 24 kHz."""

    def __init__(self, voice: str = "en-us", words_per_minute: int = 165):
        super().__init__()
        if not espeak.espeak_available():
            raise TTSError("espeak-ng is not installed: apt-get install espeak-ng")
        self.voice, self.wpm = voice, words_per_minute
        self.name = f"espeak-ng {voice}"

    def _synthesize(self, sentence: str) -> np.ndarray:
        return espeak.synthesize(sentence, self.voice, self.wpm)


def trim_lead(wav: np.ndarray, rate: int, keep_s: float = LEAD_KEEP_S) -> np.ndarray:
    """Drop leading silence (keeping `keep_s`): each second of it is a second the avatar waits to speak."""
    if not len(wav):
        return wav
    peak = float(np.max(np.abs(wav)))
    if peak <= 0:
        return wav[:0]
    start = int(np.argmax(np.abs(wav) > LEAD_FLOOR * peak))
    return wav[max(0, start - int(keep_s * rate)) :]


def _to_int16(wav: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(wav, np.float32) * 32767.0), -32768, 32767).astype(np.int16)


def _make(voice: str) -> Speaker:
    if voice == "espeak" or voice.startswith("espeak:"):
        return EspeakSpeaker(voice.split(":", 1)[1] if ":" in voice else "en-us")
    return NeuralSpeaker(voice)


_shared: dict[str, Speaker] = {}
_shared_lock = threading.Lock()


def load_speaker(voice: str = NEURAL_DEFAULT, *, fallback: bool = True) -> tuple[Speaker, str | None]:
    """The speaker for `voice` (shared per process) and a note when espeak-ng stands in for it."""
    with _shared_lock:
        if voice in _shared:
            return _shared[voice], None
        try:
            speaker = _make(voice)
        except TTSError as exc:
            if not fallback or voice.startswith("espeak"):
                raise
            speaker = _shared.get("espeak") or EspeakSpeaker()
            _shared["espeak"] = speaker
            return speaker, f"neural voice unavailable ({exc}); speaking with espeak-ng instead"
        _shared[voice] = speaker
        return speaker, None
