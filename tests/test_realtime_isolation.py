"""Per-session isolation of the realtime endpoint as the app mounts it: avatars are reached only by grant."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastapi import FastAPI

from testkit.realtime import FakeEngine, Peer, make_avatar
from workbench.config import Settings
from workbench.realtime.admission import GRANT_REFUSED
from workbench.realtime.server import embed_html, mount_realtime


def _app_mode(tmp_path, **options):
    """The manager as `create_app` mounts it: no open_avatars."""
    engine = FakeEngine([make_avatar(avatar_id="alice"), make_avatar(n=8, avatar_id="bob")])
    settings = Settings(runs_dir=tmp_path / "runs", openai_api_key=None, openai_base_url=None, ice_servers_json="[]")
    app = FastAPI()
    manager = mount_realtime(app, engine, settings, **options)
    return app, manager


def _client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_config_names_no_avatars(tmp_path):
    app, manager = _app_mode(tmp_path)
    assert manager.open_avatars is False

    async def main():
        async with _client(app) as http:
            return await http.get("/rtc/config")

    config = asyncio.run(main())
    assert config.status_code == 200
    assert config.json()["avatars"] == [] and config.json()["open_avatars"] is False
    assert "alice" not in config.text and "bob" not in config.text


def test_offers_without_a_valid_grant_are_refused(tmp_path):
    app, manager = _app_mode(tmp_path)
    manager.grant("alice")  # a real grant exists, but the forger does not have it

    async def main():
        async with _client(app) as http:
            body = {"sdp": "v=0", "type": "offer", "mode": "echo"}
            return [
                await http.post("/rtc/offer", json={**body, **extra})
                for extra in (
                    {"grant": "forged-token-0123456789"},
                    {"grant": "forged-token-0123456789", "avatar_id": "bob"},
                    {"avatar_id": "bob"},  # a raw id, as the standalone page would send
                    {},  # no avatar at all: no falling back to the first cached one
                )
            ]

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    assert responses[0].json()["detail"] == GRANT_REFUSED and "expired" in GRANT_REFUSED
    assert "Realtime chat tab" in responses[2].json()["detail"]
    assert not manager.sessions


def test_a_grant_opens_its_avatar_and_no_other(tmp_path):
    app, manager = _app_mode(tmp_path)
    token = manager.grant("alice")
    src = re.search(r'src="([^"]+)"', embed_html(token=token)).group(1)
    assert src == f"/rtc/chat?grant={token}"

    async def main():
        async with _client(app) as http:
            other = await http.post(
                "/rtc/offer", json={"sdp": "v=0", "type": "offer", "mode": "echo", "grant": token, "avatar_id": "bob"}
            )
            peer = Peer(http)
            ok = await peer.connect(mode="echo", grant=token)
            again = Peer(http)  # hanging up and connecting again reuses the link
            ok_again = await again.connect(mode="echo", grant=token)
            avatars = [s.stream.avatar.avatar_id for s in manager.sessions.values()]
            await manager.close_all()
            for p in (peer, again):
                await p.close()
            return other, ok, ok_again, avatars

    other, ok, ok_again, avatars = asyncio.run(main())
    assert other.status_code == 403 and "another avatar" in other.json()["detail"]
    assert ok.status_code == 200, ok.text
    assert ok_again.status_code == 200, ok_again.text
    assert avatars == ["alice", "alice"]
    assert not manager.sessions


def test_grants_expire_and_are_bounded(tmp_path, monkeypatch):
    _, manager = _app_mode(tmp_path, grant_ttl_s=60.0, max_grants=3)
    now = [1000.0]
    monkeypatch.setattr("workbench.realtime.admission.time.monotonic", lambda: now[0])
    first = manager.grant("alice")
    assert manager.granted_avatar(first) == "alice"
    now[0] += 61
    assert manager.granted_avatar(first) is None  # expired
    tokens = [manager.grant(f"a{i}") for i in range(5)]
    assert len(set(tokens)) == 5 and len(manager._grants) == 3
    assert [manager.granted_avatar(t) for t in tokens] == [None, None, "a2", "a3", "a4"]
    assert manager.granted_avatar("") is None


def test_open_avatars_keeps_the_standalone_page_working(tmp_path):
    app, manager = _app_mode(tmp_path, open_avatars=True)

    async def main():
        async with _client(app) as http:
            config = await http.get("/rtc/config")
            peer = Peer(http)
            ok = await peer.connect(mode="echo", avatar_id="bob")
            avatars = [s.stream.avatar.avatar_id for s in manager.sessions.values()]
            await peer.close()
            await manager.close_all()
            return config, ok, avatars

    config, ok, avatars = asyncio.run(main())
    assert config.json()["avatars"] == ["alice", "bob"]
    assert ok.status_code == 200, ok.text
    assert avatars == ["bob"]
