"""Offline text-to-speech with Debian's espeak-ng, resampled to the Realtime 24 kHz PCM16 format.

The fallback speaker of the keyless local voice (`tts.EspeakSpeaker`) and the voice of the local
Realtime stand-in server (`testkit.fake_realtime`): real speech audio without any model download.
`TTSError` here is the one error for every speaker (espeak-ng or the neural voice).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess

import numpy as np
import soundfile as sf
import soxr

from workbench.config import REALTIME_SAMPLE_RATE

MAX_TTS_CHARS = 2000
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


class TTSError(RuntimeError):
    """A speaker (espeak-ng or the neural voice) is missing or failed."""


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def split_sentences(text: str) -> list[str]:
    """Sentences (kept with their punctuation), so the first can be spoken while the rest synthesise."""
    parts = [p.strip() for p in _SENTENCE_END.split(text.strip())]
    return [p for p in parts if p]


def synthesize(text: str, voice: str = "en-us", words_per_minute: int = 165, timeout: float = 20.0) -> np.ndarray:
    """Speak `text` with espeak-ng; int16 mono at 24 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TTSError("espeak-ng is not installed; install it with `apt-get install espeak-ng`")
    text = text.strip()
    if not text:
        return np.zeros(0, np.int16)
    if len(text) > MAX_TTS_CHARS:
        raise TTSError(f"text too long for speech: {len(text)} characters (limit {MAX_TTS_CHARS})")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", voice):
        raise TTSError(f"invalid espeak-ng voice name {voice!r}")
    wpm = int(min(450, max(80, words_per_minute)))
    try:
        # Text goes through stdin, never the command line, so nothing in it can become an option.
        proc = subprocess.run(
            [exe, "--stdout", "--stdin", "-v", voice, "-s", str(wpm)],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise TTSError(f"espeak-ng took longer than {timeout:.0f} s") from exc
    if proc.returncode != 0 or not proc.stdout:
        raise TTSError(f"espeak-ng failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[:200]}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if rate != REALTIME_SAMPLE_RATE:
        audio = soxr.resample(audio, rate, REALTIME_SAMPLE_RATE)
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
