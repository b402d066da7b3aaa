"""The keyless local voice: espeak-ng speech, echo and FAQ replies, energy VAD, barge-in offline."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from testkit.realtime import SessionHarness, make_session, need_espeak
from workbench.realtime.voices import VoiceError, make_voice
from workbench.realtime.voices.local_voice import DEFAULT_FAQ, LocalVoice, faq_answer, load_faq
from workbench.voice import espeak
from workbench.voice.vad import EnergyVAD


def _drain(voice):
    out = []
    while not voice.events.empty():
        out.append(voice.events.get_nowait())
    return out


def test_echo_speaks_the_typed_text():
    need_espeak()

    async def main():
        voice = LocalVoice("echo", speed_factor=50, voice="espeak", listen=False)
        await voice.connect()
        await voice.send_text("Testing one two three.")
        await voice._reply
        return _drain(voice)

    events = asyncio.run(main())
    kinds = [e.kind for e in events]
    assert [e.status for e in events if e.kind == "status"][:2] == ["connecting", "connected"]
    assert (
        kinds.index("response_started")
        < kinds.index("audio")
        < kinds.index("audio_done")
        < kinds.index("response_done")
    )
    audio = np.concatenate([e.audio for e in events if e.kind == "audio"])
    assert np.array_equal(audio, espeak.synthesize("Testing one two three."))
    assert 0.8 < len(audio) / 24_000 < 4.0
    assert [e.text for e in events if e.kind == "transcript_done"] == ["Testing one two three."]
    assert events[-1].kind == "response_done" and events[-1].status == "completed"


def test_faq_matches_questions_by_their_words():
    assert faq_answer(DEFAULT_FAQ, "How does the lip sync work?") == DEFAULT_FAQ["how does lip sync work"]
    assert faq_answer(DEFAULT_FAQ, "what is MuseTalk") == DEFAULT_FAQ["what is musetalk"]
    assert faq_answer(DEFAULT_FAQ, "hello!") == DEFAULT_FAQ["hello hi hey"]
    assert "only know a few answers" in faq_answer(DEFAULT_FAQ, "quantum chromodynamics lattice")
    assert LocalVoice("faq").reply_for("what is musetalk?") == DEFAULT_FAQ["what is musetalk"]
    assert LocalVoice("echo").reply_for("what is musetalk?") == "what is musetalk?"


def test_faq_loads_from_yaml(tmp_path):
    (tmp_path / "map.yaml").write_text("opening hours: We are open nine to five.\n")
    (tmp_path / "list.yaml").write_text("- q: where are you\n  a: In the cloud.\n")
    (tmp_path / "bad.yaml").write_text("just a string\n")
    assert faq_answer(load_faq(tmp_path / "map.yaml"), "what are your opening hours") == "We are open nine to five."
    assert load_faq(tmp_path / "list.yaml") == {"where are you": "In the cloud."}
    with pytest.raises(VoiceError, match="mapping"):
        load_faq(tmp_path / "bad.yaml")


def test_energy_vad_finds_speech_and_ignores_silence():
    rng = np.random.default_rng(0)
    quiet = (rng.standard_normal(24_000) * 0.002 * 32767).astype(np.int16)  # -54 dBFS room noise
    loud = (rng.standard_normal(12_000) * 0.2 * 32767).astype(np.int16)
    vad = EnergyVAD()
    assert vad.process(quiet) == []
    events = []
    for chunk in np.array_split(np.concatenate([loud, quiet]), 17):  # any chunking
        events += vad.process(chunk)
    assert [k for k, _ in events] == ["speech_started", "speech_stopped"]
    started, stopped = events[0][1], events[1][1]
    assert abs(started - 1000) <= 40  # speech began 1 s into the stream
    assert abs(stopped - (1500 + 500)) <= 60  # 0.5 s of speech, then 500 ms of silence


def test_tts_refuses_bad_input():
    need_espeak()
    assert espeak.synthesize("   ").size == 0
    with pytest.raises(espeak.TTSError, match="too long"):
        espeak.synthesize("a" * (espeak.MAX_TTS_CHARS + 1))
    with pytest.raises(espeak.TTSError, match="voice"):
        espeak.synthesize("hello", voice="--evil option")
    assert espeak.split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]


def test_unknown_modes_are_refused():
    with pytest.raises(VoiceError, match="unknown voice mode"):
        make_voice("karaoke")
    with pytest.raises(VoiceError, match="unknown local voice mode"):
        LocalVoice("karaoke")  # type: ignore[arg-type]


def test_microphone_speech_interrupts_the_avatar_offline():
    need_espeak()
    text = "I will keep talking for a few seconds so that you can interrupt me in the middle of it."

    async def main():
        h = await SessionHarness(make_session(LocalVoice("echo", speed_factor=3, voice="espeak", listen=False))).start()
        try:
            await h.wait_for(lambda: h.session.voice.status == "connected")
            await h.session.send_text(text)
            await h.wait_for(lambda: len(h.speech()) >= 25, what="speech")
            rng = np.random.default_rng(1)
            await h.session.voice.send_user_audio((rng.standard_normal(4800) * 0.3 * 32767).astype(np.int16))
            await h.wait_for(lambda: h.page_events("truncated"), what="the truncation")
            after = len(h.frames)
            await asyncio.sleep(0.3)
            return h, h.frames[after:]
        finally:
            await h.stop()

    h, later = asyncio.run(main())
    ((item_id, end_ms),) = h.session.voice.truncations
    assert end_ms == 40 * len(h.speech(item_id))
    assert 25 * 40 <= end_ms < 40 * len(h.speech()) + 1
    assert h.page_events("response_done")[-1]["status"] == "cancelled"  # the local reply stopped too
    assert later and all(f.kind == "idle" for f in later)


def test_typing_while_the_avatar_speaks_interrupts_and_answers():
    need_espeak()

    async def main():
        h = await SessionHarness(make_session(LocalVoice("echo", speed_factor=3, voice="espeak", listen=False))).start()
        try:
            await h.wait_for(lambda: h.session.voice.status == "connected")
            await h.session.send_text("This first answer is going to be interrupted by the next message.")
            await h.wait_for(lambda: len(h.speech()) >= 10)
            await h.session.send_text("Second.")
            await h.wait_for(
                lambda: len({f.item_id for f in h.speech()}) == 2 and not h.session.stream.speaking,
                what="the second reply",
            )
            return h
        finally:
            await h.stop()

    h = asyncio.run(main())
    first, second = list(dict.fromkeys(f.item_id for f in h.speech()))
    assert h.page_events("barge_in")[0]["reason"] == "text"
    assert h.session.voice.truncations[0] == (first, 40 * len(h.speech(first)))
    expected = espeak.synthesize("Second.")
    played = np.concatenate([f.audio for f in h.speech(second)])
    assert np.array_equal(played[: len(expected)], expected)
