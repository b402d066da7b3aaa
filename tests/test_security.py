"""A hostile visitor against the real app on 127.0.0.1, through HTTP only (issue 25's faults, one test each).

The app is `create_app` served by uvicorn in this process with the CPU renderer and `public=True` (a shared
server). Every probe goes through the same routes a browser or a script would use: Gradio's
`/gradio_api/upload` and `/gradio_api/call/<name>`, and the realtime `/rtc/*` routes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from testkit.realtime import offer_sdp
from testkit.runs import session_latency_log
from workbench.config import Settings

CANARY = "CANARY-creds-7f3a9c"
SETTINGS = dict(
    public=True,
    prepare_example=False,
    openai_api_key=None,
    openai_base_url=None,
    max_sessions=2,
    session_connect_timeout_s=2.0,
    queue_keep_s=2.0,
    queue_per_client=3,
    grants_per_session=4,
    visitor_disk_mb=50,
    max_upload_mb=100,
)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


class Site:
    """The served app, its folders and a few helpers for talking to it like a browser would."""

    def __init__(self, root: Path, samples_dir: Path, avatar):
        from workbench.engine import Engine
        from workbench.ui.app import create_app

        self.root = root
        self.settings = Settings(
            cache_dir=root / "cache", models_dir=root / "models", runs_dir=root / "runs", **SETTINGS
        )
        self.app = create_app(Engine(self.settings, renderer="cpu"), samples_dir=samples_dir)
        self.ui = self.app.state.workbench_ui
        self.rtc = self.app.state.realtime
        self.rtc.add_avatar(avatar)  # a real prepared avatar: the chat's lip-sync stream runs as in the app
        self.avatar_id = avatar.avatar_id
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="info"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    # --- Gradio ---------------------------------------------------------------------------------
    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            r = httpx.post(f"{self.base}/gradio_api/upload", files={"files": (path.name, f)}, timeout=60)
        r.raise_for_status()
        return file_data(r.json()[0], path.name)

    def call(self, api: str, data: list, timeout: float = 120) -> tuple[str, str]:
        """(event, data) of the last event of a Gradio API call: 'complete' or 'error'."""
        r = httpx.post(f"{self.base}/gradio_api/call/{api}", json={"data": data}, timeout=timeout)
        if r.status_code != 200:
            return "http", f"{r.status_code} {r.text}"
        event_id = r.json()["event_id"]
        with httpx.stream("GET", f"{self.base}/gradio_api/call/{api}/{event_id}", timeout=timeout) as s:
            text = s.read().decode()
        event, payload = "", ""
        for line in text.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                payload = line.split(":", 1)[1].strip()
        return event, payload

    def scratch(self) -> Path:
        return Path(self.ui.ctx.scratch.name)

    # --- realtime -------------------------------------------------------------------------------
    def offer(self, sdp: str, holder: str | None = None, **body) -> httpx.Response:
        grant = self.rtc.grant(self.avatar_id, holder=holder)
        return httpx.post(
            f"{self.base}/rtc/offer", json={"sdp": sdp, "type": "offer", "grant": grant, **body}, timeout=30
        )


def file_data(path: str, name: str | None = None) -> dict:
    return {"path": str(path), "orig_name": name or Path(path).name, "meta": {"_type": "gradio.FileData"}}


@pytest.fixture(scope="module")
def leftovers():
    """What killed processes left before the app starts: a dead process's scratch, an unfinished run."""
    root = Path(tempfile.mkdtemp(prefix="wb-security-"))
    dead = Path(tempfile.gettempdir()) / f"workbench-ui-{2**22 + 12345}-deadbeef"  # no such pid
    dead.mkdir(exist_ok=True)
    (dead / "clip.mp4").write_bytes(b"x" * 1000)
    stale = root / "runs" / "sessions" / "tok" / ".run-1.abcd.tmp"
    stale.mkdir(parents=True)
    (stale / "partial.json").write_text("{}")
    old = time.time() - 3600
    os.utime(stale / "partial.json", (old, old))
    os.utime(stale, (old, old))
    yield root, dead, stale
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(dead, ignore_errors=True)


@pytest.fixture(scope="module")
def site(leftovers, samples_dir, yongen_avatar):
    s = Site(leftovers[0], samples_dir, yongen_avatar)
    # after uvicorn configured its logging (which replaces the handlers of its loggers)
    records = _Records()
    for name in ("uvicorn.error", "uvicorn", ""):
        logging.getLogger(name).addHandler(records)
    s.records = records
    yield s
    s.close()
    for name in ("uvicorn.error", "uvicorn", ""):
        logging.getLogger(name).removeHandler(records)


@pytest.fixture(scope="module")
def sdp() -> str:
    return offer_sdp()


# --- 1. file inputs -------------------------------------------------------------------------------
def test_no_endpoint_opens_a_server_file_named_in_a_request(site, samples_dir, tmp_path):
    """Every endpoint with a file input, called with a FileData naming a server file: refused, nothing read."""
    secrets_dir = tmp_path / "server-secrets"
    secrets_dir.mkdir()
    yaml_secret = secrets_dir / "creds.yaml"
    yaml_secret.write_text(f"name: {CANARY}\ncases: {CANARY}\n")
    video_secret = secrets_dir / "private.mp4"
    shutil.copyfile(samples_dir / "yongen.mp4", video_secret)
    audio_secret = secrets_dir / "private.wav"
    shutil.copyfile(samples_dir / "eng.wav", audio_secret)
    info = httpx.get(f"{site.base}/gradio_api/info", timeout=30).json()["named_endpoints"]
    tried = []
    for name, ep in info.items():
        params = ep["parameters"]
        files = [i for i, p in enumerate(params) if p["component"] in ("File", "Audio", "Video", "Image")]
        if not files:
            continue
        for i in files:
            kind = params[i]["component"]
            secret = audio_secret if kind == "Audio" else video_secret if name == "/prepare" else yaml_secret
            data = [p.get("parameter_default") if p.get("parameter_has_default") else None for p in params]
            data[i] = file_data(secret)
            if name in ("/run", "/cases_update"):
                data[0] = "upload"
            event, payload = site.call(name.lstrip("/"), data)
            tried.append(name)
            assert event in ("error", "http"), f"{name} accepted a server file: {event} {payload[:300]}"
            assert CANARY not in payload
    assert {"/prepare", "/run", "/cases_update", "/audio_length", "/grid"} <= set(tried)
    assert not site.ui.engine.list_avatars(), "an avatar was prepared from a server file"


def test_handlers_refuse_paths_outside_the_uploads_and_samples_too(site, tmp_path):
    """Defence in depth: called directly (no Gradio check), the handlers still refuse a server file."""
    import gradio as gr

    from workbench.media import MediaError
    from workbench.ui.session_state import new_session

    secret = tmp_path / "creds.yaml"
    secret.write_text(f"cases: {CANARY}\n")
    with pytest.raises(gr.Error) as e:
        site.ui.eval_tab.run("upload", str(secret), None, None, new_session(), progress=None)
    assert CANARY not in e.value.message and "uploaded through this page" in e.value.message
    update = site.ui.tuning_tab.audio_length(None, str(tmp_path / "does-not-exist.wav"))
    assert update == site.ui.tuning_tab.audio_length(None, str(secret))  # the same answer: nothing is told
    wrong_type = Path(site.ui.ctx.input_roots[0]) / "notes.txt"
    with pytest.raises(MediaError, match="not a supported audio type"):
        site.ui.tuning_tab._audio(None, str(wrong_type))


# --- 2. outbound connections ----------------------------------------------------------------------
def test_an_offer_cannot_make_the_server_connect_to_an_internal_port(site, sdp):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                accepted.append(conn.recv(200))
                conn.close()
            except (TimeoutError, OSError):
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    answers = []
    for url in (f"ws://127.0.0.1:{port}/v1", f"http://localhost:{port}", "wss://169.254.169.254/v1"):
        r = site.offer(sdp, holder=f"mapper-{url}", mode="openai", api_key="sk-visitor-1", realtime={"base_url": url})
        answers.append((r.status_code, r.json().get("detail")))
        sid = r.json().get("session_id") if r.status_code == 200 else None
        if sid:
            httpx.delete(f"{site.base}/rtc/session/{sid}", timeout=10)
    t.join()
    listener.close()
    assert not accepted, "the server opened a connection where a visitor pointed it"
    assert all(code == 400 for code, _ in answers), answers
    assert len({detail for _, detail in answers}) == 1  # the same words whatever is (or is not) at the target


async def _check(policy, url):
    from workbench.realtime.egress import EndpointRefused

    try:
        await policy.check(url)
        return True
    except EndpointRefused:
        return False


def test_the_egress_policy_follows_the_operator():
    from workbench.realtime.egress import EgressPolicy

    base = dict(public=True, openai_api_key=None, openai_base_url="wss://realtime.internal.example/v1")
    closed = EgressPolicy.from_settings(Settings(**base))
    listed = EgressPolicy.from_settings(
        Settings(**base, realtime_allowed_base_urls="ws://127.0.0.1:9999/v1, wss://azure.example/openai")
    )
    listed_private = EgressPolicy.from_settings(
        Settings(**base, realtime_allowed_base_urls="ws://127.0.0.1:9999/v1", realtime_allow_private=True)
    )
    typed = EgressPolicy.from_settings(Settings(**base, realtime_visitor_base_url=True))

    def ok(policy, url):
        return asyncio.run(_check(policy, url))

    assert ok(closed, None) and ok(closed, "wss://realtime.internal.example/v1/")  # the operator's own endpoint
    assert not ok(closed, "wss://8.8.8.8/v1")
    assert not ok(listed, "ws://127.0.0.1:9999/v1")  # listed, but loopback needs the operator's second yes
    assert ok(listed_private, "ws://127.0.0.1:9999/v1") and not ok(listed_private, "ws://127.0.0.1:9998/v1")
    assert ok(typed, "wss://8.8.8.8/v1")
    private = EgressPolicy.from_settings(Settings(openai_api_key=None, host="127.0.0.1", public=None))
    assert ok(private, "wss://8.8.8.8/v1") and not ok(private, "ws://127.0.0.1:9/v1")  # a local user's own choice
    for url in ("ws://10.0.0.5/v1", "ws://[::1]:80", "ws://169.254.169.254", "ws://localhost:8080", "ws://0.0.0.0"):
        assert not ok(typed, url), url


# --- 3/4. disk ------------------------------------------------------------------------------------
def test_what_killed_processes_left_is_swept_on_start(site, leftovers):
    _, dead, stale = leftovers
    assert not dead.exists() and not stale.exists()
    assert site.scratch().name.startswith(f"workbench-ui-{os.getpid()}-")


def _suite_zip(path: Path, tmp: Path, pad_mb: int, name: str = "suite") -> Path:
    log = session_latency_log(tmp / f"{name}.jsonl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/suite.yaml", f"name: {name}\ncases:\n  - id: s\n    kind: latency_log\n    log: s.jsonl\n")
        zf.write(log, f"{name}/s.jsonl")
        zf.writestr(f"{name}/pad.bin", b"\0" * (pad_mb * 1024 * 1024))
    return path


def _unpacked(site) -> list[Path]:
    return sorted(site.scratch().glob("suite-*/unpacked-*"))


def test_a_suite_zip_is_unpacked_once_and_within_the_budget(site, tmp_path):
    before = len(_unpacked(site))
    first = site.upload(_suite_zip(tmp_path / "a.zip", tmp_path, 20, "a"))
    event, payload = site.call("cases_update", ["upload", first])
    assert event == "complete" and '"s"' in payload, payload[:300]
    event, payload = site.call("run", ["upload", first, [], 0, "local", None])
    assert event == "complete", payload[:300]
    assert len(_unpacked(site)) == before + 1  # the case list and the run share one unpacked copy
    second = site.upload(_suite_zip(tmp_path / "b.zip", tmp_path, 40, "b"))
    event, payload = site.call("run", ["upload", second, [], 0, "local", None])
    assert event == "error" and "full" in payload, payload[:300]
    assert len(_unpacked(site)) == before + 1


def test_a_damaged_zip_is_one_line_and_leaves_nothing(site, tmp_path):
    bad = tmp_path / "crc.zip"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("suite/suite.yaml", "name: x\ncases: []\n")
        zf.writestr("suite/data.bin", b"A" * 100_000)
    raw = bytearray(bad.read_bytes())
    at = raw.find(b"A" * 1000)
    raw[at + 500] = ord("B")  # the stored bytes no longer match their CRC
    bad.write_bytes(bytes(raw))
    before = {p.name for p in site.scratch().rglob("*")}
    event, payload = site.call("run", ["upload", site.upload(bad), [], 0, "local", None])
    assert event == "error" and "damaged" in payload and "Traceback" not in payload, payload[:300]
    assert "\\n" not in payload and "/tmp" not in payload
    assert {p.name for p in site.scratch().rglob("*")} <= before | {"crc.zip"}  # no partial extraction


def test_a_failed_preparation_keeps_no_upload_copy_and_the_budget_holds(site, tmp_path):
    import cv2

    junk = Path(site.settings.cache_dir) / "detections" / "0ld-junk"
    junk.mkdir(parents=True, exist_ok=True)
    with open(junk / "big.npy", "wb") as f:
        f.truncate(80 * 1024 * 1024)  # 80 MB (sparse) of old detections: over the 50 MB budget
    old = time.time() - 7200
    os.utime(junk / "big.npy", (old, old))
    os.utime(junk, (old, old))
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 128, np.uint8))  # no face in it
    event, payload = site.call("prepare", [None, site.upload(photo), 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4])
    assert event == "error" and "face" in payload.lower(), payload[:300]
    uploads = Path(site.settings.cache_dir) / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir()), "the upload copy of a failed preparation stayed"
    assert not junk.exists()
    assert site.ui.ctx.disk.usage() <= site.ui.ctx.disk.limit_bytes


# --- 5. the waiting line --------------------------------------------------------------------------
def test_abandoned_places_do_not_keep_a_free_slot_empty(site, sdp):
    rtc = site.rtc
    held = [site.offer(sdp, holder=f"ghost-{i}") for i in range(2)]  # offers that never connect
    assert [r.status_code for r in held] == [200, 200]
    waiting = [site.offer(sdp, holder=f"waiter-{i}") for i in range(3)]  # refused, then never poll again
    assert [r.status_code for r in waiting] == [503, 503, 503]
    one_too_many = site.offer(sdp, holder="waiter-x")
    assert one_too_many.status_code == 429, one_too_many.text  # one address holds at most 3 places
    deadline = time.monotonic() + 30
    while rtc.sessions and time.monotonic() < deadline:  # the ghosts' connect timeout frees their slots
        time.sleep(0.2)
    assert not rtc.sessions
    time.sleep(site.settings.queue_keep_s + 0.5)  # the waiters stopped asking: their places lapse
    newcomer = site.offer(sdp, holder="newcomer")
    assert newcomer.status_code == 200, newcomer.text
    httpx.delete(f"{site.base}/rtc/session/{newcomer.json()['session_id']}", timeout=10)


def test_one_visitor_cannot_push_out_everyones_chat_links(site):
    rtc = site.rtc
    good = rtc.grant("alice", holder="good-browser", client="10.1.1.1")
    mine = [rtc.grant("alice", holder="greedy-browser", client="10.6.6.6") for _ in range(10)]
    assert sum(rtc.granted_avatar(t) is not None for t in mine) == site.settings.grants_per_session
    for i in range(rtc.max_grants + 50):  # page loads are free: many sessions from one address
        rtc.grant("alice", holder=f"flood-{i}", client="10.6.6.6")
    assert rtc.granted_avatar(good) == "alice"


# --- 6. the smaller ones --------------------------------------------------------------------------
def test_realtime_routes_refuse_what_they_cannot_use(site, sdp):
    no_fp = "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith("a=fingerprint:"))
    r = site.offer(no_fp, holder="no-fingerprint")
    assert r.status_code == 400 and "fingerprint" in r.json()["detail"]
    assert not site.rtc.sessions
    plain = httpx.post(
        f"{site.base}/rtc/offer",
        content=b'{"sdp": "v=0", "type": "offer"}',
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    assert plain.status_code == 415
    r = site.offer(sdp, holder="never-connects")
    assert r.status_code == 200
    sid = r.json()["session_id"]
    logged = httpx.post(f"{site.base}/rtc/session/{sid}/latency", timeout=10)
    assert logged.status_code == 409
    assert not list((Path(site.settings.runs_dir) / "realtime").glob("*.jsonl"))
    httpx.delete(f"{site.base}/rtc/session/{sid}", timeout=10)


def test_a_client_dropping_mid_body_is_not_an_asgi_exception(site):
    site.records.messages.clear()
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", site.port), timeout=5) as s:
            s.sendall(
                b"POST /rtc/offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"sdp": "' + b"v" * 1000
            )
    time.sleep(1.0)
    assert httpx.get(f"{site.base}/rtc/config", timeout=10).status_code == 200
    assert not [m for m in site.records.messages if "Exception in ASGI application" in m]


def test_errors_are_one_short_line_without_server_paths(site, tmp_path):
    huge = "x" * 100_000
    event, payload = site.call("run", ["example", None, [huge], 0, "local", None])
    assert event == "error" and len(payload) < 1000, (event, len(payload))
    garbage = tmp_path / "clip.mp4"
    garbage.write_bytes(os.urandom(4096))
    up = site.upload(garbage)
    event, payload = site.call("prepare", [None, up, 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4])
    assert event == "error" and "clip.mp4" in payload, payload[:300]
    assert str(Path(up["path"]).parent) not in payload and tempfile.gettempdir() + "/" not in payload


def test_operator_actions_are_refused_to_a_visitor_of_a_public_server(site):
    event, payload = site.call("fetch", [""])
    assert event == "error" and "operator" in payload, payload[:300]
    event, payload = site.call("run", ["example", None, ["yongen_eng"], 1, "ray", ""])
    assert event == "error" and "operator" in payload, payload[:300]


def test_the_operator_token_unlocks_operator_actions():
    from workbench.config import operator_allowed

    public = Settings(public=True, operator_token="op-secret-1", openai_api_key=None)
    assert not operator_allowed(public) and not operator_allowed(public, "wrong")
    assert operator_allowed(public, "op-secret-1")
    assert operator_allowed(Settings(public=False, openai_api_key=None))  # a private server: the user is the operator
    assert operator_allowed(Settings(public=True, operator_actions=True, openai_api_key=None))
    assert not operator_allowed(Settings(host="0.0.0.0", openai_api_key=None))


def test_the_app_made_nothing_outside_its_folders(site):
    """After every probe: the visitors' disk stays within its budget."""
    assert site.ui.ctx.disk.usage() <= site.ui.ctx.disk.limit_bytes


def test_a_caller_who_stopped_asking_does_not_hold_a_free_slot(monkeypatch):
    """The line's rule on its own clock: a free slot goes to the first caller still asking."""
    from workbench.realtime import admission

    now = [100.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    line = admission.WaitingLine(keep_s=7.0, per_client=2)
    for holder in ("a", "b"):
        with pytest.raises(admission.Busy):
            line.admit(holder, "1.1.1.1", free=0, max_sessions=1)
    with pytest.raises(admission.LineFull):
        line.admit("c", "1.1.1.1", free=0, max_sessions=1)  # a third place for the same address
    now[0] += 3
    with pytest.raises(admission.Busy) as b:
        line.admit("b", "1.1.1.1", free=0, max_sessions=1)  # b keeps asking; a went quiet
    assert b.value.ahead == 1
    now[0] += 3  # a has not asked for 6 s (more than a retry and slack), b asked 3 s ago
    assert line.admit("b", "1.1.1.1", free=1, max_sessions=1) == "b"
    with pytest.raises(admission.Busy) as a:
        line.admit("a", "1.1.1.1", free=0, max_sessions=1)  # a came back within keep_s: still first
    assert a.value.ahead == 0
    now[0] += 8
    assert line.admit("d", "2.2.2.2", free=1, max_sessions=1) == "d"  # a's place lapsed
