"""`workbench voice say|transcribe`: the offline speech models on their own, for checking them by ear and by eye."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
import typer

from workbench.voice.asr import ASRError, Transcriber
from workbench.voice.tts import TTSError, load_speaker

voice_app = typer.Typer(
    help="Offline speech: neural text-to-speech and English speech recognition.", no_args_is_help=True
)

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="print model load times and real-time factors")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@voice_app.command("say")
def say(
    text: Annotated[str, typer.Argument(help="what to say")],
    out: Annotated[Path, typer.Option("--out", "-o", help="WAV file to write (24 kHz mono PCM16)")],
    voice: Annotated[
        str,
        typer.Option("--voice", help="'heart' (neural, in the wheel), another cached hibari voice, 'espeak[:NAME]'"),
    ] = "heart",
    verbose: Verbose = False,
) -> None:
    """Speak TEXT into a WAV file."""
    if not text.strip():
        raise _fail("nothing to say: TEXT is empty")
    try:
        t0 = time.perf_counter()
        speaker, note = load_speaker(voice, fallback=False)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        first_ms = None
        parts = []
        for pcm in speaker.sentences(text):
            first_ms = first_ms if first_ms is not None else 1000 * (time.perf_counter() - t1)
            parts.append(pcm)
        synth_s = time.perf_counter() - t1
    except TTSError as exc:
        raise _fail(str(exc)) from exc
    audio = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, audio, speaker.rate, subtype="PCM_16")
    seconds = len(audio) / speaker.rate
    if verbose:
        typer.echo(f"voice: {speaker.name}; load {load_s:.2f} s")
        typer.echo(
            f"synthesis: {seconds:.2f} s of audio in {synth_s:.3f} s "
            f"(real-time factor {synth_s / max(seconds, 1e-6):.3f}), first sentence {first_ms or 0:.0f} ms"
        )
    typer.echo(f"wrote {out} ({seconds:.2f} s, {speaker.rate} Hz)")


@voice_app.command("transcribe")
def transcribe(
    file: Annotated[Path, typer.Argument(help="an audio file (WAV, FLAC, OGG…), any rate")],
    max_seconds: Annotated[float, typer.Option(help="transcribe at most the last N seconds (<= 30)")] = 30.0,
    verbose: Verbose = False,
) -> None:
    """Print the English transcript of FILE as the last line."""
    if not file.exists():
        raise _fail(f"no such file: {file}")
    try:
        audio, rate = sf.read(file, dtype="float32", always_2d=False)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise _fail(f"cannot read {file} as audio: {exc}") from exc
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    try:
        asr = Transcriber(max_seconds=max_seconds)
        result = asr.transcribe(audio, rate)
    except ASRError as exc:
        raise _fail(str(exc)) from exc
    if verbose:
        typer.echo(f"model: {asr.name} (CTranslate2 int8); load {asr.load_s:.2f} s")
        typer.echo(
            f"audio: {result.audio_s:.2f} s, transcribed {result.used_s:.2f} s in {result.asr_ms / 1000:.3f} s "
            f"(real-time factor {result.rtf:.3f}); avg log-prob {result.avg_logprob:.2f}, "
            f"no-speech {result.no_speech_prob:.2f}"
        )
    if result.bounded:
        typer.echo(f"note: only the last {result.used_s:.0f} s of {result.audio_s:.0f} s were transcribed")
    if not result.text:
        typer.echo("note: no speech recognised", err=True)
    elif result.unsure:
        typer.echo("note: low confidence; the model understands English only (Whisper tiny.en)", err=True)
    typer.echo(result.text)
