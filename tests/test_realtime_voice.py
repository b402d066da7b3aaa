"""OpenAI Realtime voice through the real `openai` client against the local protocol server (loopback only)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest

from testkit.fake_realtime import FakeRealtimeServer, neural_speech
from testkit.realtime import SessionHarness, make_session, need_espeak
from workbench.realtime.openai_config import RealtimeConfig
from workbench.realtime.voices import OpenAIRealtimeVoice, VoiceAuthError
from workbench.voice import espeak

KEY = "sk-test-0123456789abcdefSECRET"
FAST = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "connect_timeout_s": 5.0}


@pytest.fixture(autouse=True)
def _espeak():
    need_espeak()


def _voice(server: FakeRealtimeServer, key: str = KEY, **config) -> OpenAIRealtimeVoice:
    return OpenAIRealtimeVoice(RealtimeConfig(base_url=server.url, **{**FAST, **config}), api_key=key)


def _expected_audio(text: str) -> np.ndarray:
    # The stand-in server speaks each sentence with the local voice's speaker (neural, else espeak-ng).
    return np.concatenate([neural_speech(s) for s in espeak.split_sentences(text)])


def _loud(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(int(24_000 * seconds)) * 0.3 * 32767).astype(np.int16)


def test_a_turn_produces_audio_and_lip_synced_frames(yongen_avatar):
    from workbench.lipsync.cpu.renderer import CPURenderer

    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            session = make_session(_voice(server), renderer=CPURenderer(), avatar=yongen_avatar)
            h = await SessionHarness(session).start()
            try:
                await h.wait_for(lambda: h.session.voice.status == "connected", what="connected")
                await h.session.send_text("Hello avatar")
                await h.wait_for(
                    lambda: h.page_events("response_done") and not h.session.stream.speaking and h.speech(),
                    what="the reply to finish playing",
                )
                return server, h
            finally:
                await h.stop()

    server, h = asyncio.run(main())
    update = server.events_of("session.update")[0]["session"]
    assert update["type"] == "realtime"
    assert update["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert server.paths[0].startswith("/v1/realtime?model=gpt-realtime")
    sent = server.events_of("conversation.item.create")[0]["item"]
    assert sent["content"] == [{"type": "input_text", "text": "Hello avatar"}]
    # The frames carry exactly the server's speech, in order, 40 ms per frame.
    speech = h.speech()
    item_id = speech[0].item_id
    assert item_id.startswith("item_") and all(f.item_id == item_id for f in speech)
    expected = _expected_audio("You said: Hello avatar")
    played = np.concatenate([f.audio for f in speech])
    assert np.array_equal(played[: len(expected)], expected)
    assert not played[len(expected) :].any()  # the tail that closes the mouth is silent
    assert "".join(e["text"] for e in h.page_events("transcript")).strip() == "You said: Hello avatar"
    assert h.page_events("latency")[0]["first_frame_ms"] > 0
    assert len(h.video_frames) > len(speech) and len(h.audio_frames) >= 2 * len(speech) - 4


def test_barge_in_truncates_at_the_audio_actually_played_and_the_next_turn_follows():
    reply = "This is a long answer. It keeps going for a while. The user will interrupt it soon. " * 2

    async def main():
        async with FakeRealtimeServer(api_key=KEY, responder=lambda text: reply, speed_factor=2) as server:
            h = await SessionHarness(make_session(_voice(server))).start()
            try:
                await h.wait_for(lambda: h.session.voice.status == "connected")
                await h.session.voice.send_text("Tell me something long")
                await h.wait_for(lambda: len(h.speech()) >= 30, what="30 speech frames")
                await h.session.voice.send_user_audio(_loud(0.3))  # the user starts talking
                await h.wait_for(lambda: h.page_events("truncated"), what="the truncation")
                first_item = h.speech()[0].item_id
                played_frames = len(h.speech(first_item))
                # Silence: the server VAD ends the user's turn and answers it.
                for _ in range(8):
                    await h.session.voice.send_user_audio(np.zeros(2400, np.int16))
                await h.wait_for(lambda: any(f.item_id != first_item for f in h.speech()), what="the next reply")
                return server, h, first_item, played_frames
            finally:
                await h.stop()

    server, h, first_item, played_frames = asyncio.run(main())
    assert len(server.truncations) == 1
    cut = server.truncations[0]
    assert cut["item_id"] == first_item
    assert cut["audio_end_ms"] == 40 * played_frames  # what the clock handed to playback, to the ms
    assert 30 * 40 <= cut["audio_end_ms"] < cut["audio_total_ms"]
    assert server.events_of("input_audio_buffer.append")
    assert [e["status"] for e in h.page_events("response_done")][0] == "cancelled"
    assert h.page_events("barge_in")[0]["reason"] == "speech"
    assert (
        "input_audio_buffer.speech_started" in server.sent_types
        and "input_audio_buffer.speech_stopped" in server.sent_types
    )
    # Once cut, the first reply never shows again.
    last_cut = max(f.index for f in h.speech(first_item))
    assert all(f.item_id != first_item for f in h.frames if f.index > last_cut)


def test_a_dropped_connection_recovers_with_the_conversation():
    reply = "A reply that is long enough to be cut by a dropped connection. " * 3

    async def main():
        async with FakeRealtimeServer(api_key=KEY, responder=lambda text: reply, speed_factor=1.5) as server:
            h = await SessionHarness(make_session(_voice(server))).start()
            voice = h.session.voice
            try:
                await h.wait_for(lambda: voice.status == "connected")
                await voice.send_text("first message")
                await h.wait_for(lambda: len(h.speech()) >= 10, what="speech before the drop")
                await server.drop_all()
                await h.wait_for(lambda: any(e.get("status") == "reconnecting" for e in h.page_events("status")))
                idle_from = len(h.frames)
                speaking_during_gap = h.session.stream.speaking
                await h.wait_for(lambda: voice.status == "connected" and voice.reconnects == 1, what="reconnected")
                gap = h.frames[idle_from:]
                await voice.send_text("second message")
                await h.wait_for(
                    lambda: len(server.events_of("response.create")) == 2 and len({f.item_id for f in h.speech()}) == 2,
                    what="a reply after reconnecting",
                )
                return server, h, gap, speaking_during_gap
            finally:
                await h.stop()

    server, h, gap, speaking_during_gap = asyncio.run(main())
    assert not speaking_during_gap
    assert gap and all(f.kind == "idle" for f in gap)  # the avatar stays idle while the voice is away
    assert server.handshakes == 2
    assert len(server.events_of("session.update")) == 2  # the session configuration is sent again
    replayed = [e["item"] for e in server.events_of("conversation.item.create")]
    assert replayed[1]["role"] == "user" and replayed[1]["content"][0]["text"] == "first message"
    assert replayed[-1]["content"][0]["text"] == "second message"
    statuses = [e["status"] for e in h.page_events("status")]
    assert statuses[0] == "connecting" and "reconnecting" in statuses and statuses[-1] == "connected"


def test_refused_handshakes_are_retried_with_backoff():
    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            server.refuse_next(2, status=503)
            voice = _voice(server)
            await voice.connect()
            status = voice.status
            await voice.close()
            events = []
            while not voice.events.empty():
                events.append(voice.events.get_nowait())
            return server, status, events

    server, status, events = asyncio.run(main())
    assert status == "connected"
    assert server.handshakes == 3 and server.refused == 2
    retries = [e.text for e in events if e.status == "reconnecting"]
    assert len(retries) == 2 and "HTTP 503" in retries[0]


def test_error_events_reach_the_user():
    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            h = await SessionHarness(make_session(_voice(server, voice="robot"))).start()
            try:
                await h.wait_for(lambda: h.page_events("error"), what="the bad-voice error")
                await server.inject_error("Rate limit reached for requests", code="rate_limit_exceeded")
                await h.wait_for(lambda: len(h.page_events("error")) == 2, what="the injected error")
                return h
            finally:
                await h.stop()

    h = asyncio.run(main())
    errors = h.page_events("error")
    assert "Invalid value: 'robot'" in errors[0]["message"]
    assert errors[1] == {**errors[1], "message": "Rate limit reached for requests", "code": "rate_limit_exceeded"}


def test_a_wrong_key_fails_at_once_with_a_clear_message():
    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            voice = _voice(server, key="sk-wrong-key-000000")
            with pytest.raises(VoiceAuthError, match="refused the API key"):
                await voice.connect()
            return server, voice

    server, voice = asyncio.run(main())
    assert server.handshakes == 1  # no retry can fix a bad key
    assert voice.status == "failed"


def test_the_key_never_reaches_a_log_or_the_page(caplog):
    caplog.set_level(logging.DEBUG)

    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            h = await SessionHarness(make_session(_voice(server))).start()
            try:
                await h.wait_for(lambda: h.session.voice.status == "connected")
                await h.session.send_text("hi")
                await h.wait_for(lambda: h.page_events("response_done"))
                await server.drop_all()
                await h.wait_for(lambda: h.session.voice.reconnects == 1)
                bad = _voice(server, key=KEY[:-3] + "BAD")
                with pytest.raises(VoiceAuthError):
                    await bad.connect()
                return h
            finally:
                await h.stop()

    h = asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    # The websocket handshakes were logged at DEBUG (so the check below is not vacuous) …
    assert any("Authorization" in m for m in messages)
    # … and neither the key nor a piece of it appears anywhere.
    for secret in (KEY, KEY[:-3] + "BAD", KEY[8:24]):
        assert not any(secret in m for m in messages)
        assert secret not in str(list(h.session.events))
    assert KEY not in repr(h.session.voice.config)


def test_without_server_vad_the_client_finds_turns_and_asks_for_replies():
    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            h = await SessionHarness(make_session(_voice(server, turn_detection="none"))).start()
            voice = h.session.voice
            try:
                await h.wait_for(lambda: voice.status == "connected")
                silence = np.zeros(2400, np.int16)
                for _ in range(5):
                    await voice.send_user_audio(silence)  # nothing goes up while nobody speaks
                appends_before = len(server.events_of("input_audio_buffer.append"))
                for chunk in np.array_split(_loud(0.6), 6):
                    await voice.send_user_audio(chunk)
                for _ in range(8):
                    await voice.send_user_audio(silence)
                await h.wait_for(lambda: h.speech(), what="the reply to the spoken turn")
                return server, h, appends_before
            finally:
                await h.stop()

    server, h, appends_before = asyncio.run(main())
    assert server.events_of("session.update")[0]["session"]["audio"]["input"]["turn_detection"] is None
    assert appends_before == 0
    kinds = [e["type"] for e in server.received]
    assert (
        kinds.index("input_audio_buffer.append")
        < kinds.index("input_audio_buffer.commit")
        < kinds.index("response.create")
    )
    assert "input_audio_buffer.speech_started" not in server.sent_types  # the server did no turn detection
    assert "input_audio_buffer.committed" in server.sent_types
    assert h.page_events("speech_started") and h.page_events("speech_stopped")


def test_malformed_server_events_are_skipped_and_the_reply_goes_on(caplog):
    """Bad base64, an audio delta without data and a message that is not JSON: each is skipped and logged,
    the connection stays up, the rest of the reply plays, and the page gets one plain message."""
    deltas = {"n": 0}

    def mangle(event):
        if event["type"] != "response.output_audio.delta":
            return None
        deltas["n"] += 1
        if deltas["n"] == 2:
            return {**event, "delta": "@@not base64@@"}
        if deltas["n"] == 3:
            return {k: v for k, v in event.items() if k != "delta"}
        if deltas["n"] == 4:
            return '{"type": "response.output_audio.delta", "delta": '  # cut off: not JSON
        return None

    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            server.mangle = mangle
            h = await SessionHarness(make_session(_voice(server))).start()
            try:
                await h.wait_for(lambda: h.session.voice.status == "connected", what="connected")
                await h.session.send_text("Tell me a long story please")
                await h.wait_for(
                    lambda: h.page_events("response_done") and not h.session.stream.speaking and h.speech(),
                    what="the reply to finish playing",
                )
                return server, h
            finally:
                await h.stop()

    with caplog.at_level(logging.WARNING, logger="workbench.realtime.voices.openai_voice"):
        server, h = asyncio.run(main())
    assert deltas["n"] > 6
    assert server.handshakes == 1  # no reconnect: the call never dropped
    assert h.session.voice.bad_events == 3
    expected = _expected_audio("You said: Tell me a long story please")
    played = np.concatenate([f.audio for f in h.speech()])
    assert len(played) >= len(expected) - 3 * 2400 - 960  # all but the three skipped 100 ms deltas
    errors = h.page_events("error")
    assert len(errors) == 1 and errors[0]["code"] == "bad_server_event"
    assert "Incorrect padding" not in errors[0]["message"] and "JSONDecodeError" not in errors[0]["message"]
    assert sum("skipped a malformed Realtime event" in r.getMessage() for r in caplog.records) == 3


def test_credentials_in_a_base_url_never_reach_logs_the_page_or_the_latency_log(caplog, tmp_path):
    from workbench.realtime.voices.redact import redact_url

    assert redact_url("wss://bob:hunter2@host/v1?api-key=abc123&model=x") == (
        "wss://[redacted]@host/v1?api-key=[redacted]&model=x"
    )

    async def main():
        async with FakeRealtimeServer(api_key=KEY) as server:
            url = server.url.replace("ws://", "ws://bob:hunter2@") + "?api-key=topsecret"
            voice = OpenAIRealtimeVoice(RealtimeConfig(base_url=url, **FAST, max_retries=0), api_key=KEY)
            h = await SessionHarness(make_session(voice)).start()
            try:
                await h.wait_for(lambda: voice.status in ("connected", "failed"), what="an outcome")
                await server.drop_all()
                await h.wait_for(lambda: voice.status == "failed", what="the drop")
            finally:
                await h.stop()
            h.session.write_latency_log(tmp_path / "log.jsonl")
            return h

    with caplog.at_level(logging.DEBUG):
        h = asyncio.run(main())
    seen = " ".join(str(e) for e in h.session.events) + (tmp_path / "log.jsonl").read_text() + caplog.text
    assert "hunter2" not in seen and "topsecret" not in seen
    assert "[redacted]@" in h.session.voice.describe()
