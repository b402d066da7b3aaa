"""Current OpenAI Realtime models: gpt-realtime-2 by default, reasoning effort and the transcription model in the
GA session, and a model the API does not serve ending in one plain message (real `openai` client, local server)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from testkit.fake_realtime import FakeRealtimeServer
from workbench.config import Settings
from workbench.realtime.openai_config import RealtimeConfig, supports_reasoning
from workbench.realtime.voices import OpenAIRealtimeVoice, VoiceError

KEY = "sk-test-0123456789abcdefMODELS"
FAST = {"initial_backoff_s": 0.05, "max_backoff_s": 0.2, "connect_timeout_s": 5.0, "max_retries": 3}


def _keys(obj) -> set[str]:
    if isinstance(obj, dict):
        return set(obj) | {k for v in obj.values() for k in _keys(v)}
    if isinstance(obj, list):
        return {k for v in obj for k in _keys(v)}
    return set()


def _server(**kw) -> FakeRealtimeServer:
    # A fixed recogniser: these tests are about the session fields, not about speech recognition.
    return FakeRealtimeServer(api_key=KEY, recogniser=lambda pcm: "hello", **kw)


def _voice(server: FakeRealtimeServer, **config) -> OpenAIRealtimeVoice:
    return OpenAIRealtimeVoice(RealtimeConfig(base_url=server.url, **{**FAST, **config}), api_key=KEY)


def test_defaults_are_the_current_models_and_the_session_holds_only_ga_fields():
    s = Settings(_env_file=None)
    assert (s.realtime_model, s.realtime_reasoning_effort, s.realtime_transcription_model) == (
        "gpt-realtime-2",
        "low",
        "gpt-realtime-whisper",
    )
    body = RealtimeConfig.from_settings(s).session_payload()
    assert body["reasoning"] == {"effort": "low"}
    assert body["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}
    assert "temperature" not in _keys(body)
    # An older model gets no reasoning field (the API refuses it there); "none" turns the transcript off.
    old = RealtimeConfig(model="gpt-realtime", transcription_model="none").session_payload()
    assert "reasoning" not in old and "transcription" not in old["audio"]["input"]
    assert [supports_reasoning(m) for m in ("gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-2.1-mini")] == [
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="reasoning_effort"):
        RealtimeConfig(reasoning_effort="extreme")


def test_the_local_server_checks_reasoning_and_transcription_fields():
    """The protocol server refuses what the GA API refuses, so a wrong session body fails in CI, not in production."""

    async def refused(model: str, session: dict) -> dict:
        async with _server() as server:
            async with connect(
                f"{server.url}/realtime?model={model}", additional_headers={"Authorization": f"Bearer {KEY}"}
            ) as ws:
                assert json.loads(await ws.recv())["type"] == "session.created"
                await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", **session}}))
                return json.loads(await ws.recv())

    def code(model: str, session: dict) -> tuple[str, str | None]:
        ev = asyncio.run(refused(model, session))
        if ev["type"] == "session.updated":
            return "ok", None
        return ev["error"]["code"], ev["error"]["param"]

    whisper = {"audio": {"input": {"transcription": {"model": "gpt-realtime-whisper"}}}}
    assert code("gpt-realtime-2", {"reasoning": {"effort": "minimal"}, **whisper}) == ("ok", None)
    assert code("gpt-realtime-2", {"temperature": 0.8}) == ("unknown_parameter", "session.temperature")
    assert code("gpt-realtime", {"reasoning": {"effort": "low"}}) == ("unsupported_parameter", "session.reasoning")
    assert code("gpt-realtime-2", {"reasoning": {"effort": "extreme"}}) == ("invalid_value", "session.reasoning.effort")
    assert code("gpt-realtime-2", {"reasoning": "low"}) == ("invalid_value", "session.reasoning")
    t = "session.audio.input.transcription"
    assert code("gpt-realtime-2", {"audio": {"input": {"transcription": {"model": "whisper-9"}}}}) == (
        "model_not_found",
        f"{t}.model",
    )
    with_prompt = {"audio": {"input": {"transcription": {"model": "gpt-realtime-whisper", "prompt": "x"}}}}
    assert code("gpt-realtime-2", with_prompt) == ("unsupported_parameter", f"{t}.prompt")


def test_reasoning_effort_and_transcription_model_reach_the_session():
    async def main():
        async with _server() as server:
            voice = _voice(server, reasoning_effort="high")
            await voice.connect()
            await server.wait_for(lambda: "session.updated" in server.sent_types)
            await voice.close()
            return server

    server = asyncio.run(main())
    assert server.paths[0].startswith("/v1/realtime?model=gpt-realtime-2")
    update = server.events_of("session.update")[0]["session"]
    assert update["reasoning"] == {"effort": "high"}
    assert update["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}
    assert "error" not in server.sent_types


@pytest.mark.parametrize("how", ["error", "http"])
def test_an_unknown_model_is_one_plain_message_naming_the_setting(how):
    """The API reports the model as an `error` event (model_not_found) or refuses the handshake: either way the
    user reads one line naming the setting to change, and nothing retries."""

    async def main():
        async with _server(models={"gpt-realtime-2"}, unknown_model=how) as server:
            voice = _voice(server, model="gpt-realtime")
            with pytest.raises(VoiceError) as err:
                await voice.connect()
            await voice.close()
            return server, voice, str(err.value)

    server, voice, message = asyncio.run(main())
    assert "'gpt-realtime'" in message and "WORKBENCH_REALTIME_MODEL" in message and "gpt-realtime-2" in message
    assert "\n" not in message and "retries" not in message
    assert server.handshakes == 1 and voice.status in ("failed", "closed")
    if how == "error":
        assert server.sent_types[0] == "error"


def test_a_model_retired_during_a_call_ends_it_with_the_same_message():
    async def main():
        async with _server() as server:
            voice = _voice(server)
            events = []
            pump = asyncio.create_task(_collect(voice, events))
            await voice.connect()
            server.retired.add("gpt-realtime-2")  # the API stops serving it to this key: responses fail
            await voice.send_text("hello")
            await server.wait_for(lambda: voice.status == "failed")
            await voice.close()
            pump.cancel()
            return server, events

    server, events = asyncio.run(main())
    errors = [e for e in events if e.kind == "error"]
    assert len(errors) == 1 and errors[0].code == "model_not_found"
    assert "WORKBENCH_REALTIME_MODEL" in errors[0].text and "'gpt-realtime-2'" in errors[0].text
    failed = [e for e in events if e.kind == "status" and e.status == "failed"]
    assert failed and failed[0].text == errors[0].text
    assert server.handshakes == 1  # no reconnect: the model would be refused again


def test_an_unknown_transcription_model_names_the_transcription_setting():
    async def main():
        async with _server() as server:
            voice = _voice(server, transcription_model="whisper-9")
            events = []
            pump = asyncio.create_task(_collect(voice, events))
            await voice.connect()
            await server.wait_for(lambda: voice.status == "failed")
            await voice.close()
            pump.cancel()
            return events

    events = asyncio.run(main())
    errors = [e for e in events if e.kind == "error"]
    assert len(errors) == 1 and "'whisper-9'" in errors[0].text
    assert "WORKBENCH_REALTIME_TRANSCRIPTION_MODEL" in errors[0].text and "gpt-realtime-whisper" in errors[0].text


async def _collect(voice, events: list) -> None:
    async for ev in voice.iter_events():
        events.append(ev)


def test_app_flags_set_the_realtime_models_and_refuse_a_bad_effort(monkeypatch):
    import app

    seen = {}

    class Stop(Exception):
        pass

    def fake_engine(settings):
        seen["settings"] = settings
        raise Stop

    monkeypatch.setattr("workbench.engine.Engine", fake_engine)
    runner = CliRunner()
    flags = ["--realtime-model", "gpt-realtime-2.1", "--reasoning-effort", "minimal", "--transcription-model", "none"]
    result = runner.invoke(app.cli, flags)
    assert isinstance(result.exception, Stop)
    s = seen["settings"]
    assert (s.realtime_model, s.realtime_reasoning_effort, s.realtime_transcription_model) == (
        "gpt-realtime-2.1",
        "minimal",
        "none",
    )
    assert "transcription" not in RealtimeConfig.from_settings(s).session_payload()["audio"]["input"]
    bad = runner.invoke(app.cli, ["--reasoning-effort", "extreme"])
    assert bad.exit_code == 2 and "realtime_reasoning_effort" in bad.output


def test_each_way_the_api_reports_a_model_becomes_the_same_plain_message():
    from websockets.exceptions import ConnectionClosedError, InvalidStatus
    from websockets.frames import Close
    from websockets.http11 import Response

    from workbench.realtime.openai_errors import error_detail, model_setting

    def http(status: int, body: bytes) -> InvalidStatus:
        return InvalidStatus(Response(status, "x", [], body))

    body = b'{"error": {"code": "model_not_found", "message": "The model `gpt-realtime` does not exist."}}'
    for exc in (
        http(404, body),
        http(400, body),
        ConnectionClosedError(Close(1008, "model_not_found: gpt-realtime"), None),
        ConnectionClosedError(Close(4000, "The model gpt-realtime has been deprecated"), None),
    ):
        message, retry, bad_key = error_detail(exc, "gpt-realtime")
        assert "'gpt-realtime'" in message and "WORKBENCH_REALTIME_MODEL" in message, message
        assert (retry, bad_key) == (False, False)
    # Other failures keep their own messages, and retry where that can help.
    assert error_detail(http(404, b"not a realtime endpoint"), "gpt-realtime-2")[0].endswith("(HTTP 404)")
    assert error_detail(ConnectionClosedError(Close(1011, "overloaded"), None), "m")[1] is True
    assert error_detail(http(401, b""), "m")[2] is True
    assert model_setting("invalid_value", "Invalid value for 'voice'.") is None
    assert model_setting(None, "The transcription model `whisper-9` does not exist.") == "transcription_model"
