"""The keyless local voice: offline ears (Silero VAD turns, Whisper tiny.en), echo or FAQ replies, a local speaker.

It hears the microphone offline or reads typed text, answers by echoing it or from a small FAQ, and
speaks with the neural hibari voice (espeak-ng as the fallback) through the same lip-sync path as the
OpenAI voice. The speech models are in `workbench.voice`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from workbench.config import REALTIME_SAMPLE_RATE
from workbench.realtime.voices.contract import VoiceError, VoiceEvent, VoiceSession
from workbench.voice import espeak
from workbench.voice import tts as speech
from workbench.voice.asr import ASRError, shared_transcriber
from workbench.voice.espeak import TTSError
from workbench.voice.vad import EnergyVAD, TurnDetector, VADError

log = logging.getLogger(__name__)
_ids = itertools.count(1)

DEFAULT_FAQ: dict[str, str] = {
    "hello hi hey": "Hello! I am the local demo avatar. Type a question, or connect an OpenAI key to talk freely.",
    "who what are you": "I am a talking head driven by the workbench's lip-sync renderer, speaking with a local voice.",
    "how does lip sync work": "My voice is cut into forty millisecond frames, each frame becomes a mouth shape, "
    "and the renderer paints it onto my face in time with the sound.",
    "what is musetalk": "MuseTalk is a real-time lip-sync model. It inpaints the lower half of the face in latent "
    "space, conditioned on Whisper audio features.",
    "how use openai key real voice": "Choose the OpenAI mode and enter your key. The key stays on the server "
    "for this session only.",
    "what can you do help": "I can echo what you type, answer a few questions about this workbench, and stop "
    "talking as soon as you interrupt me.",
    "bye goodbye thanks thank": "Thank you for talking with me. Goodbye!",
}
_STOP = {"a", "an", "the", "is", "are", "do", "does", "i", "you", "me", "my", "your", "to", "of", "can", "it", "in"}


def load_faq(path: str | Path) -> dict[str, str]:
    """A FAQ from YAML: a mapping question → answer, or a list of {q: …, a: …}."""
    data = yaml.safe_load(Path(path).read_text())
    if isinstance(data, dict):
        faq = {str(k): str(v) for k, v in data.items()}
    elif isinstance(data, list) and all(isinstance(x, dict) and "q" in x and "a" in x for x in data):
        faq = {str(x["q"]): str(x["a"]) for x in data}
    else:
        raise VoiceError(f"{path}: a FAQ must be a mapping question -> answer or a list of {{q, a}}")
    if not faq:
        raise VoiceError(f"{path}: the FAQ is empty")
    return faq


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in _STOP}


def faq_answer(faq: dict[str, str], question: str, fallback: str | None = None) -> str:
    """The answer whose question shares the most words with `question` (a bag-of-words match)."""
    asked = _words(question)
    best, best_score = None, 0.0
    for q, a in faq.items():
        keys = _words(q)
        if not keys or not asked:
            continue
        score = len(keys & asked) / min(len(keys), len(asked))
        if score > best_score:
            best, best_score = a, score
    if best is not None and best_score >= 0.34:
        return best
    return fallback or "I only know a few answers in local mode. Ask me how lip sync works, or what MuseTalk is."


# What the local voice says when the recogniser gives it nothing usable (spoken, so the user hears it).
NOT_CAUGHT = "Sorry, I did not catch that. Could you say it again?"
NOT_ENGLISH = "I am not sure I understood. In local mode I only understand English. Could you say it again in English?"
FIRST_PIECE_CHARS = 60  # a longer first sentence is spoken in two pieces, split at a comma
MIN_SPEECH_MS = 250  # a voiced blip shorter than this (a cough, a click) is not a question
EARS_NOTE = "local speech recognition: English only (Whisper tiny.en)"


@dataclass
class TurnTiming:
    """Where the time goes between the end of the user's speech and the answer's first audio (ms)."""

    turn: int
    speech_end: float  # perf_counter estimate of when the user stopped speaking
    vad_hangover_ms: float = 0.0  # end of speech → end of turn detected
    asr_ms: float = 0.0  # end of turn → transcript ready (less than the ASR's compute when it started at a pause)
    asr_compute_ms: float = 0.0
    asr_early: bool = False  # the transcript started at the first pause, before the end of turn
    reply_ms: float = 0.0  # transcript → reply text
    tts_first_ms: float = 0.0  # reply text → first sentence synthesised
    first_audio: float | None = None  # perf_counter when the first audio chunk was handed to the stream
    item_id: str | None = None
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("speech_end", "first_audio")}
        if self.first_audio is not None:
            d["to_first_audio_ms"] = 1000 * (self.first_audio - self.speech_end)
        return d


def _speakable_pieces(reply: str) -> list[str]:
    """Sentences, with a long first one cut at a comma: the first piece's synthesis is time the user waits."""
    pieces = espeak.split_sentences(reply)
    if pieces and len(pieces[0]) > FIRST_PIECE_CHARS:
        cut = pieces[0].find(", ", 20)
        if 0 < cut < len(pieces[0]) - 20:
            pieces[:1] = [pieces[0][: cut + 1], pieces[0][cut + 2 :]]
    return pieces


class LocalVoice(VoiceSession):
    """Keyless voice: echo or FAQ replies, spoken by the neural voice (espeak-ng as the fallback).

    With `listen` (the default) the microphone is a real input: Silero VAD finds the turns, Whisper
    tiny.en transcribes each one (starting at the first pause, so the transcript is often ready when
    the hang-over ends), and the reply is spoken sentence by sentence. Speech while the avatar talks
    interrupts it, as a Realtime server's `speech_started` does. When the speech models cannot load,
    typing still works and an energy VAD on the microphone keeps barge-in.
    """

    def __init__(
        self,
        mode: Literal["echo", "faq"] = "echo",
        *,
        faq: dict[str, str] | None = None,
        voice: str = "heart",
        listen: bool = True,
        chunk_ms: int = 100,
        speed_factor: float = 4.0,
        vad: EnergyVAD | None = None,
        barge_in_on_speech: bool = True,
        speaker: Any | None = None,
        transcriber: Any | None = None,
        turns: Any | None = None,
        hangover_ms: int = 400,
        max_turn_s: float = 15.0,
    ):
        super().__init__()
        if mode not in ("echo", "faq"):
            raise VoiceError(f"unknown local voice mode {mode!r}; use 'echo' or 'faq'")
        self.mode = mode
        self.faq = faq or DEFAULT_FAQ
        self.voice = voice
        self.listen = listen
        self.chunk = max(1, REALTIME_SAMPLE_RATE * chunk_ms // 1000)
        self.speed_factor = max(0.1, speed_factor)  # audio arrives this many times faster than real time
        self.vad = vad or EnergyVAD()
        self.barge_in_on_speech = barge_in_on_speech
        self.speaker = speaker
        self.transcriber = transcriber
        self.turns = turns
        self.hangover_ms, self.max_turn_s = hangover_ms, max_turn_s
        self.notes: list[str] = []
        self._reply: asyncio.Task | None = None
        self._answer: asyncio.Task | None = None
        self._early: tuple[int, asyncio.Future] | None = None  # (turn, transcription started at a pause)
        self._turn_no = 0
        self._items: dict[str, float] = {}  # item id → ms of audio sent
        self.truncations: list[tuple[str, int]] = []
        self.timings: list[TurnTiming] = []
        self.last_turn: Any | None = None

    @property
    def hearing(self) -> bool:
        return self.transcriber is not None and self.turns is not None

    def describe(self) -> str:
        # One plain line for the page's status: what answers, in which voice, and what it understands.
        speaks = getattr(self.speaker, "name", None) or self.voice
        ears = f"hears English ({self.transcriber.name})" if self.hearing else "typed text only"
        return f"local {'FAQ' if self.mode == 'faq' else 'echo'} · voice: {speaks} · {ears}"

    def _load(self) -> None:
        if self.speaker is None:
            try:
                self.speaker, note = speech.load_speaker(self.voice)
            except TTSError as exc:
                raise VoiceError(f"local voice cannot speak: {exc}") from exc
            if note:
                self.notes.append(note)
        if not self.listen or self.hearing:
            return
        try:
            self.transcriber = self.transcriber or shared_transcriber(max_seconds=self.max_turn_s)
            self.turns = self.turns or TurnDetector(hangover_ms=self.hangover_ms, max_turn_s=self.max_turn_s)
        except (ASRError, VADError) as exc:
            self.transcriber = self.turns = None
            self.notes.append(f"speech recognition unavailable ({exc}); type instead, the microphone only interrupts")

    async def connect(self) -> None:
        self._emit(VoiceEvent("status", status="connecting", text="loading the local speech models"))
        try:
            await asyncio.to_thread(self._load)
        except VoiceError as exc:
            self._emit(VoiceEvent("status", status="failed", text=str(exc)))
            raise
        self._emit(VoiceEvent("status", status="connected", text=self.describe()))
        if self.hearing:
            self._emit(VoiceEvent("note", text=EARS_NOTE))
        for note in self.notes:
            self._emit(VoiceEvent("note", text=note))

    async def close(self) -> None:
        await self._cancel_answer()
        await self.cancel_response()
        self._emit(VoiceEvent("status", status="closed"))

    # ---- microphone -------------------------------------------------------------------------------
    async def send_user_audio(self, pcm: np.ndarray) -> None:
        if not self.hearing:
            for kind, _ms in self.vad.process(pcm):
                if kind == "speech_started":
                    if not self.barge_in_on_speech:
                        continue
                    await self.cancel_response()  # what a Realtime server does with interrupt_response
                self._emit(VoiceEvent(kind))  # type: ignore[arg-type]
            return
        now = time.perf_counter()
        for ev in self.turns.process(pcm):
            if ev.kind == "speech_started":
                self._turn_no += 1
                self._early = None
                await self._cancel_answer()  # the user went on: the last turn's answer is moot
                if self.barge_in_on_speech:
                    await self.cancel_response()
                    self._emit(VoiceEvent("speech_started"))
            elif ev.kind == "pause":
                # Start transcribing now; if the user does not resume, the transcript is (nearly) ready
                # when the hang-over ends, hiding the ASR time behind it.
                audio = self.turns.snapshot().audio
                self._early = (
                    self._turn_no,
                    asyncio.ensure_future(asyncio.to_thread(self.transcriber.transcribe, audio)),
                )
            elif ev.kind == "resumed":
                self._early = None
            elif ev.kind == "speech_stopped":
                turn, self.turns.finished = self.turns.finished, None
                self.last_turn = turn  # kept for inspection (tests save it when a transcript is wrong)
                # The end of speech was `hangover` ago in microphone time; audio arrives in real time.
                lag_ms = (self.turns.ms - ev.ms) + self.turns.hangover_ms
                timing = TurnTiming(self._turn_no, speech_end=now - lag_ms / 1000, vad_hangover_ms=lag_ms)
                early = self._early[1] if self._early and self._early[0] == self._turn_no else None
                self._early = None
                self._emit(VoiceEvent("speech_stopped"))
                self._answer = asyncio.create_task(self._answer_turn(turn, early, timing), name="local-voice-turn")

    async def _answer_turn(self, turn: Any, early: asyncio.Future | None, timing: TurnTiming) -> None:
        n = next(_ids)
        item_id = f"item_local_user_{n}"
        if turn is None or turn.speech_ms < MIN_SPEECH_MS:
            self._emit(VoiceEvent("note", text="(a short sound, not words: no answer)"))
            return
        t0 = time.perf_counter()
        timing.vad_hangover_ms = 1000 * (t0 - timing.speech_end)
        try:
            if early is not None:
                timing.asr_early = True
                heard = await early
            else:
                heard = await asyncio.to_thread(self.transcriber.transcribe, turn.audio, 16_000)
        except Exception as exc:  # the recogniser broke: say so rather than hang the conversation
            log.exception("local speech recognition failed")
            self._emit(VoiceEvent("error", text=f"speech recognition failed: {exc}", code="asr_failed"))
            return
        t1 = time.perf_counter()
        timing.asr_ms, timing.asr_compute_ms = 1000 * (t1 - t0), heard.asr_ms
        if turn.bounded:
            self._emit(
                VoiceEvent(
                    "note",
                    text=f"(a long turn, {turn.total_ms / 1000:.0f} s: only the last {self.max_turn_s:.0f} s were transcribed)",
                )
            )
        if not heard.text:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text="(not understood)"))
            reply = NOT_CAUGHT
        elif heard.unsure:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text=f"{heard.text} (unsure: English only)"))
            reply = NOT_ENGLISH
        else:
            self._emit(VoiceEvent("user_transcript", item_id=item_id, text=heard.text))
            reply = self.reply_for(heard.text)
        timing.text = heard.text
        timing.reply_ms = 1000 * (time.perf_counter() - t1)
        await self.cancel_response()
        self._reply = asyncio.create_task(self._speak(reply, timing), name="local-voice-reply")

    async def _cancel_answer(self) -> None:
        task, self._answer = self._answer, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- replies ----------------------------------------------------------------------------------
    def reply_for(self, text: str) -> str:
        return text if self.mode == "echo" else faq_answer(self.faq, text)

    async def send_text(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        await self._cancel_answer()
        await self.cancel_response()
        self._reply = asyncio.create_task(self._speak(self.reply_for(text)), name="local-voice-reply")

    async def _speak(self, reply: str, timing: TurnTiming | None = None) -> None:
        if self.speaker is None:
            await asyncio.to_thread(self._load)
        n = next(_ids)
        response_id, item_id = f"resp_local_{n}", f"item_local_{n}"
        self._emit(VoiceEvent("response_started", response_id=response_id))
        status = "completed"
        sent = 0
        try:
            loop_t0 = asyncio.get_running_loop().time()
            t_text = time.perf_counter()
            for sentence in _speakable_pieces(reply):
                pcm = await asyncio.to_thread(self.speaker.synthesize, sentence)
                if timing is not None and timing.first_audio is None:
                    timing.tts_first_ms = 1000 * (time.perf_counter() - t_text)
                self._emit(VoiceEvent("transcript", item_id=item_id, response_id=response_id, text=sentence + " "))
                for i in range(0, len(pcm), self.chunk):
                    piece = pcm[i : i + self.chunk]
                    if timing is not None and timing.first_audio is None:
                        timing.first_audio, timing.item_id = time.perf_counter(), item_id
                        self.timings.append(timing)
                    self._emit(VoiceEvent("audio", item_id=item_id, response_id=response_id, audio=piece))
                    sent += len(piece)
                    self._items[item_id] = 1000 * sent / REALTIME_SAMPLE_RATE
                    # Pace like a Realtime server: faster than real time, but not all at once.
                    due = loop_t0 + sent / REALTIME_SAMPLE_RATE / self.speed_factor
                    await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
            self._emit(VoiceEvent("audio_done", item_id=item_id, response_id=response_id))
            self._emit(VoiceEvent("transcript_done", item_id=item_id, text=reply))
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except TTSError as exc:
            status = "failed"
            self._emit(VoiceEvent("error", text=str(exc), code="tts_failed"))
        finally:
            self._emit(VoiceEvent("response_done", response_id=response_id, status=status))

    async def truncate(self, item_id: str, audio_end_ms: int) -> None:
        total = self._items.get(item_id)
        if total is None:
            self._emit(VoiceEvent("error", text=f"no such item {item_id}", code="item_not_found"))
            return
        end = int(min(audio_end_ms, total))
        self.truncations.append((item_id, end))
        self._emit(VoiceEvent("truncated", item_id=item_id, audio_end_ms=end))

    async def cancel_response(self) -> None:
        task, self._reply = self._reply, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
