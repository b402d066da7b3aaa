"""The WebRTC endpoint: FastAPI routes + aiortc sessions, driven by in-process aiortc peers (loopback only)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from testkit.realtime import FakeEngine, Peer, SessionHarness, make_avatar, make_session, need_espeak
from workbench.config import Settings
from workbench.realtime.server import RealtimeSetupError, embed_html, mount_realtime, parse_ice_servers
from workbench.realtime.voices import LocalVoice
from workbench.timing import read_latency_log


@pytest.fixture(scope="module", autouse=True)
def _speech_models():
    """The local voice's speech models load before any call: their loading would stall a WebRTC handshake."""
    from workbench.voice import preload

    preload()


def _app(tmp_path, avatars=None, **options):
    engine = FakeEngine(avatars or [make_avatar(avatar_id="alice")])
    settings = Settings(
        runs_dir=tmp_path / "runs", openai_api_key=None, openai_base_url=None, ice_servers_json=options.pop("ice", "[]")
    )
    app = FastAPI()
    options.setdefault("open_avatars", True)  # the standalone page; the app's grants: test_realtime_isolation.py
    manager = mount_realtime(app, engine, settings, **options)
    return app, manager, engine


def _run(coro):
    return asyncio.run(coro)


def test_a_local_reply_arrives_over_webrtc(tmp_path):
    need_espeak()
    app, manager, _ = _app(tmp_path)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            peer = Peer(http)
            res = await peer.connect(mode="echo", avatar_id="alice")
            assert res.status_code == 200, res.text
            await peer.until(lambda: len(peer.video) > 10)
            t_quiet = time.perf_counter()
            await asyncio.sleep(0.6)
            peer.said("Hello from the browser, this is a test reply.")
            await peer.until(lambda: peer.of("response_done"))
            await peer.until(lambda: peer.of("latency"))
            t0 = time.perf_counter()
            await asyncio.sleep(2.0)
            t1 = time.perf_counter()
            sid = peer.session_id
            stats = (await http.get(f"/rtc/session/{sid}/stats")).json()
            await peer.close()
            await manager.close_all()
            return peer, t_quiet, t0, t1, stats, sid

    peer, t_quiet, t0, t1, stats, sid = _run(main())
    # Rates per wall second (and how many frames a loaded 2-core machine drops) are the benchmark's business
    # (bench_realtime.py); here: frames arrived, in order, on the sender's 25 fps clock read from their timestamps.
    assert len(peer.frames(t0, t1)) >= 3 and peer.in_order(t0, t1)
    assert peer.on_clock(t0, t1, fps=25), peer.clock_ticks(t0, t1)
    assert peer.audio_energy(t0, t1) > 20 * max(1.0, peer.audio_energy(t_quiet, t_quiet + 0.5))  # speech vs idle
    assert peer.video[-1][1].width == 200 and peer.video[-1][1].height == 240
    assert "".join(m["text"] for m in peer.of("transcript")).strip() == "Hello from the browser, this is a test reply."
    assert peer.of("latency")[0]["first_frame_ms"] > 0  # measured (how fast: bench_realtime.py)
    assert stats["ticks"] > 0 and stats["mic_seconds"] > 0.5
    # The session's latency log is written when it closes, every sent frame with its send time (a frame the video
    # queue dropped on a loaded machine was never sent and has none).
    meta, timings = read_latency_log(tmp_path / "runs" / "realtime" / f"{sid}.jsonl")
    assert meta["session"] == sid
    sent = [t for t in timings if not t.idle and t.sent is not None]
    assert sent and all(t.audio_in <= t.rendered <= t.sent for t in sent)
    assert not manager.sessions


def test_two_sessions_are_isolated_and_share_one_renderer(tmp_path):
    need_espeak()
    avatars = [make_avatar(avatar_id="alice"), make_avatar(n=8, avatar_id="bob")]
    app, manager, engine = _app(tmp_path, avatars)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            a, b = Peer(http), Peer(http)
            assert (await a.connect(mode="echo", avatar_id="alice")).status_code == 200
            assert (await b.connect(mode="faq", avatar_id="bob")).status_code == 200
            streams = {sid: s.stream for sid, s in manager.sessions.items()}
            a.said("Only for Alice.")
            b.said("What is MuseTalk?")
            await a.until(lambda: a.of("response_done"))
            await b.until(lambda: b.of("transcript"))
            t0 = time.perf_counter()
            await asyncio.sleep(1.5)
            t1 = time.perf_counter()
            for p in (a, b):
                await p.close()
            await manager.close_all()
            return a, b, streams, t0, t1

    a, b, streams, t0, t1 = _run(main())
    for p in (a, b):
        assert len(p.frames(t0, t1)) >= 3 and p.in_order(t0, t1) and p.on_clock(t0, t1, fps=25)
    assert "".join(m["text"] for m in a.of("transcript")).strip() == "Only for Alice."
    assert "MuseTalk" in "".join(m["text"] for m in b.of("transcript"))
    assert not any("Alice" in m.get("text", "") for m in b.messages)
    assert {s.avatar.avatar_id for s in streams.values()} == {"alice", "bob"}
    assert all(s.renderer is engine.renderer for s in streams.values())


def test_limits_and_bad_requests_are_refused_clearly(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    app, manager, _ = _app(tmp_path, max_sessions=1)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            out = {}
            bad = await http.post("/rtc/offer", json={"sdp": "v=0 garbage", "type": "offer", "mode": "echo"})
            out["bad_sdp"] = (bad.status_code, bad.json()["detail"], len(manager.sessions))
            no_key = Peer(http)
            r = await no_key.connect(mode="openai")
            out["no_key"] = (r.status_code, r.json()["detail"])
            await no_key.close()
            other_host = Peer(http)
            r = await other_host.connect(mode="openai", realtime={"base_url": "wss://example.invalid/v1"})
            out["base_url"] = (r.status_code, r.json()["detail"])
            await other_host.close()
            r = await http.post("/rtc/offer", json={"sdp": "x", "type": "offer", "mode": "echo", "avatar_id": "nobody"})
            out["avatar"] = r.status_code
            first = Peer(http)
            assert (await first.connect(mode="echo")).status_code == 200
            second = Peer(http)
            r = await second.connect(mode="echo")
            out["busy"] = (r.status_code, r.json()["detail"])
            out["unknown"] = (await http.get("/rtc/session/nope/stats")).status_code
            out["too_long"] = (
                await http.post(f"/rtc/session/{first.session_id}/text", json={"text": "x" * 5000})
            ).status_code
            invalid = await http.post("/rtc/offer", json={"mode": "openai", "api_key": "sk-echo-me-not-12345"})
            out["invalid"] = (invalid.status_code, invalid.text)
            await first.close()
            await second.close()
            await manager.close_all()
            return out

    out = _run(main())
    assert out["bad_sdp"][0] == 400 and "offer" in out["bad_sdp"][1] and out["bad_sdp"][2] == 0
    assert out["no_key"][0] == 400 and "API key" in out["no_key"][1]
    assert out["base_url"][0] == 400 and "your own API key" in out["base_url"][1]
    assert out["avatar"] == 404
    assert out["busy"][0] == 503 and "busy" in out["busy"][1]
    assert out["unknown"] == 404
    assert out["too_long"] == 422
    assert out["invalid"][0] == 422 and "sdp" in out["invalid"][1] and "sk-echo-me-not" not in out["invalid"][1]


def test_config_and_page_never_carry_the_server_key(tmp_path):
    ice = '[{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "c"}]'
    engine = FakeEngine([make_avatar(avatar_id="alice")])
    settings = Settings(runs_dir=tmp_path, openai_api_key="sk-server-secret-123456", ice_servers_json=ice)
    app = FastAPI()
    mount_realtime(app, engine, settings, open_avatars=True)

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return [await http.get(p) for p in ("/rtc/config", "/rtc/chat", "/rtc/static/chat.js")]

    config, page, script = _run(main())
    assert config.json()["server_key"] is True
    assert config.json()["ice_servers"] == json.loads(ice)
    assert config.json()["avatars"] == ["alice"]
    for r in (config, page, script):
        assert r.status_code == 200 and "sk-server-secret" not in r.text
    assert "<video" in page.text and "RTCPeerConnection" in script.text
    assert 'src="/rtc/chat?avatar=alice"' in embed_html(avatar_id="alice") and "microphone" in embed_html()
    granted = embed_html(avatar_id="alice", token="tok-123")
    assert 'src="/rtc/chat?grant=tok-123"' in granted and "alice" not in granted


def test_ice_server_settings_are_validated():
    assert parse_ice_servers("[]") == []
    assert parse_ice_servers('[{"urls": "stun:stun.l.google.com:19302"}]') == [
        {"urls": ["stun:stun.l.google.com:19302"]}
    ]
    for bad, msg in [
        ("{", "valid JSON"),
        ('{"urls": "stun:x"}', "list"),
        ('[{"url": "stun:x"}]', "urls"),
        ('[{"urls": "http://x"}]', "stun:"),
    ]:
        with pytest.raises(RealtimeSetupError, match=msg):
            parse_ice_servers(bad)


def test_tracks_carry_audio_and_video_on_one_timeline():
    """Each tick's picture and its 40 ms of audio leave with the same timestamp (pts in their clocks)."""
    need_espeak()

    async def main():
        h = await SessionHarness(make_session(LocalVoice("echo", speed_factor=4, voice="espeak", listen=False))).start()
        try:
            await h.wait_for(lambda: h.session.voice.status == "connected")
            await h.session.send_text("Timestamps must agree.")
            await h.wait_for(
                lambda: h.page_events("response_done") and not h.session.stream.speaking and len(h.speech()) > 20
            )
            await asyncio.sleep(0.2)
            return h
        finally:
            await h.stop()

    h = _run(main())
    audio_by_pts = {f.pts: f.to_ndarray().reshape(-1) for f in h.audio_frames}
    video_pts = {f.pts for f in h.video_frames}
    checked = 0
    for sf in h.speech():
        if sf.index * 3600 not in video_pts:
            continue  # dropped by the video queue before the (test) sender pulled it
        halves = [audio_by_pts.get(sf.index * 960), audio_by_pts.get(sf.index * 960 + 480)]
        assert all(x is not None for x in halves)
        assert np.array_equal(np.concatenate(halves), sf.audio)
        checked += 1
    assert checked >= 0.9 * len(h.speech())
    assert {f.time_base.denominator for f in h.video_frames} == {90_000}
    assert {f.sample_rate for f in h.audio_frames} == {24_000}


def test_the_endpoint_lives_beside_a_gradio_app_and_closes_with_it(tmp_path):
    import gradio as gr
    from fastapi.testclient import TestClient

    from workbench.realtime.server import embed_html

    app, manager, _ = _app(tmp_path)
    with gr.Blocks() as demo:
        gr.HTML(embed_html(avatar_id="alice"))
    app = gr.mount_gradio_app(app, demo, path="/")
    closed = []
    original = manager.close_all

    async def close_all():
        closed.append(True)
        await original()

    manager.close_all = close_all
    with TestClient(app) as client:
        assert client.get("/rtc/config").json()["avatars"] == ["alice"]
        assert "<video" in client.get("/rtc/chat").text
        assert client.get("/").status_code == 200
    assert closed == [True]  # the app's shutdown closed the realtime sessions
