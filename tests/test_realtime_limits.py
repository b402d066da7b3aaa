"""Realtime call slots and request limits: body caps before parsing, nesting-safe JSON, a fair waiting line,
one live call per browser, unconnected offers reclaimed, idle and maximum call lengths, latency-log upkeep."""

from __future__ import annotations

import asyncio
import os
import time
from types import SimpleNamespace

import httpx
from aiortc import RTCPeerConnection
from fastapi import FastAPI

from testkit.realtime import FakeEngine, Peer, make_avatar
from workbench.config import Settings
from workbench.realtime import watchdog
from workbench.realtime.admission import RETRY_AFTER_S
from workbench.realtime.bodies import OFFER_BODY_LIMIT, json_depth
from workbench.realtime.server import RealtimeManager, mount_realtime, prune_logs


def _app(tmp_path, **settings):
    engine = FakeEngine([make_avatar(avatar_id="alice")])
    s = Settings(runs_dir=tmp_path / "runs", openai_api_key=None, openai_base_url=None, **settings)
    app = FastAPI()
    open_avatars = settings.pop("open_avatars", True)
    manager = mount_realtime(app, engine, s, open_avatars=open_avatars)
    return app, manager


def _client(app):
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_bodies_are_capped_before_parsing_and_deep_json_is_a_4xx(tmp_path):
    app, manager = _app(tmp_path)

    async def main():
        async with _client(app) as http:
            big = await http.post("/rtc/offer", content=b"{" + b" " * (OFFER_BODY_LIMIT + 10) + b"}")

            async def chunks():  # no Content-Length: the cap holds while the body streams in
                for _ in range(64):
                    yield b" " * 8192

            streamed = await http.post("/rtc/offer", content=chunks(), headers={"Content-Type": "application/json"})
            deep = await http.post("/rtc/offer", content=b"[" * 100_000 + b"]" * 100_000)
            deep_obj = await http.post("/rtc/offer", content=('{"a":' * 5000 + "1" + "}" * 5000).encode())
            not_json = await http.post("/rtc/offer", content=b"\xff\xfe nonsense")
            text_big = await http.post("/rtc/session/x/text", content=b'{"text": "' + b"y" * 20_000 + b'"}')
            return big, streamed, deep, deep_obj, not_json, text_big

    big, streamed, deep, deep_obj, not_json, text_big = asyncio.run(main())
    assert big.status_code == 413 and "too large" in big.json()["detail"]
    assert streamed.status_code == 413
    assert deep.status_code == 400 and "deeper" in deep.json()["detail"]
    assert deep_obj.status_code == 400
    assert not_json.status_code == 400
    assert text_big.status_code == 404  # no such session: answered before the body is read
    assert not manager.sessions


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": [1, {"b": "[[[[{{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    assert json_depth("[" * 50 + "]" * 50) == 50


def test_a_busy_server_answers_with_the_place_in_line_and_serves_it_in_order(tmp_path):
    app, manager = _app(tmp_path, max_sessions=1)

    async def main():
        async with _client(app) as http:
            first = Peer(http)
            assert (await first.connect(mode="echo")).status_code == 200
            second, third = Peer(http), Peer(http)
            r2 = await second.connect(mode="echo")
            r3 = await third.connect(mode="echo")
            await first.close()
            await manager.get(first.session_id).close()
            # The slot is free, but the second caller waited longer: the third keeps waiting.
            r3b = await third.http.post(
                "/rtc/offer",
                json={"sdp": third.pc.localDescription.sdp, "type": "offer", "ticket": r3.json()["ticket"]},
            )
            r2b = await second.http.post(
                "/rtc/offer",
                json={"sdp": second.pc.localDescription.sdp, "type": "offer", "ticket": r2.json()["ticket"]},
            )
            await second.close()
            await third.close()
            await manager.close_all()
            return r2, r3, r3b, r2b

    r2, r3, r3b, r2b = asyncio.run(main())
    assert r2.status_code == 503 and r2.json()["queue_position"] == 0 and "busy" in r2.json()["detail"]
    assert r3.json()["queue_position"] == 1 and "1 caller ahead of you" in r3.json()["detail"]
    assert r2.headers["Retry-After"] == str(RETRY_AFTER_S)
    assert r3b.status_code == 503 and r3b.json()["queue_position"] == 1
    assert r2b.status_code == 200


def test_one_live_call_per_browser_session(tmp_path):
    app, manager = _app(tmp_path, max_sessions=2, open_avatars=False)
    grant_a1 = manager.grant("alice", holder="browser-a")
    grant_a2 = manager.grant("alice", holder="browser-a")
    grant_b = manager.grant("alice", holder="browser-b")

    async def main():
        async with _client(app) as http:
            peers = [Peer(http) for _ in range(3)]
            codes = [
                (await p.connect(mode="echo", grant=g)).status_code
                for p, g in zip(peers, [grant_a1, grant_a2, grant_b], strict=True)
            ]
            live = sorted(manager.sessions)
            for p in peers:
                await p.close()
            await manager.close_all()
            return codes, live, [p.session_id for p in peers]

    codes, live, ids = asyncio.run(main())
    # Browser A's second call replaced its first instead of taking the last slot from browser B.
    assert codes == [200, 200, 200]
    assert live == sorted([ids[1], ids[2]])


def test_an_offer_that_never_connects_is_reclaimed_and_leaves_no_log(tmp_path, monkeypatch):
    monkeypatch.setattr(watchdog, "WATCH_PERIOD_S", 0.05)
    app, manager = _app(tmp_path, max_sessions=1, session_connect_timeout_s=0.5)

    async def main():
        async with _client(app) as http:
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            pc.createDataChannel("chat")
            await pc.setLocalDescription(await pc.createOffer())
            r = await http.post("/rtc/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"})
            held = len(manager.sessions)
            t0 = time.monotonic()
            while manager.sessions and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.05)
            await pc.close()
            return r.status_code, held, time.monotonic() - t0, len(manager.sessions)

    code, held, waited, left = asyncio.run(main())
    assert code == 200 and held == 1
    assert left == 0 and waited < 2.0
    assert not list(tmp_path.rglob("*.jsonl"))  # a call that never connected writes no latency log


def test_idle_and_overlong_calls_are_ended():
    m = RealtimeManager(
        FakeEngine([]),
        Settings(session_idle_timeout_s=60, session_max_s=600, session_connect_timeout_s=10, openai_api_key=None),
    )
    now = 10_000.0
    call = SimpleNamespace(created=now - 5, connected_at=None, last_activity=now - 5)
    assert m.overdue(call, now) is None
    call.created = now - 11
    assert "did not connect" in m.overdue(call, now)
    call.connected_at, call.last_activity = now - 100, now - 30
    assert m.overdue(call, now) is None
    call.last_activity = now - 61
    assert "nothing was said" in m.overdue(call, now)
    call.connected_at = call.last_activity = now - 601
    call.last_activity = now - 1
    assert "at most 10 min" in m.overdue(call, now)


def test_latency_logs_are_pruned_to_the_newest(tmp_path):
    for i in range(5):
        p = tmp_path / f"s{i}.jsonl"
        p.write_text("{}\n")
        os.utime(p, (1000 + i, 1000 + i))
    (tmp_path / "keep.txt").write_text("not a log")
    assert prune_logs(tmp_path, 2) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "s3.jsonl", "s4.jsonl"]


def test_max_sessions_is_a_setting_and_a_flag(monkeypatch):
    from typer.testing import CliRunner

    import app as entry

    assert RealtimeManager(FakeEngine([]), Settings(max_sessions=7, openai_api_key=None)).max_sessions == 7
    monkeypatch.setenv("WORKBENCH_MAX_SESSIONS", "3")
    assert Settings().max_sessions == 3
    seen = {}
    monkeypatch.setattr("workbench.engine.Engine.__init__", lambda self, s: seen.update(settings=s))
    monkeypatch.setattr("workbench.ui.app.create_app", lambda *a, **k: (_ for _ in ()).throw(SystemExit(0)))
    CliRunner().invoke(entry.cli, ["--max-sessions", "2"])
    assert seen["settings"].max_sessions == 2


def test_the_server_holds_a_bounded_number_of_loaded_avatars():
    """Calls opened on avatar after avatar do not make the server keep every one of them in memory; avatars
    given in memory (`add_avatar`) stay, since nothing could load them again."""
    avatars = [make_avatar(n=2, avatar_id=f"a{k}") for k in range(12)]
    engine = FakeEngine(avatars)
    loads = []
    load = engine.load_avatar
    engine.load_avatar = lambda i: loads.append(i) or load(i)
    m = RealtimeManager(engine, Settings(max_sessions=2, openai_api_key=None), open_avatars=True)
    pinned = make_avatar(n=2, avatar_id="given")
    m.add_avatar(pinned)

    async def main():
        for a in avatars:
            assert (await m.avatar(a.avatar_id)) is a
        assert (await m.avatar("a11")) is avatars[11] and loads.count("a11") == 1  # the recent ones stay loaded
        assert (await m.avatar("a0")) is avatars[0] and loads.count("a0") == 2  # the oldest was let go
        assert (await m.avatar("given")) is pinned

    asyncio.run(main())
    assert len(m._avatars) == m.max_sessions + 2
