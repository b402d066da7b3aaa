"""A bounded hostile run against the real app on 127.0.0.1: issue 25's probes in a loop, then the bill.

    python bench/bench_hostile.py               # 10 minutes (default), writes bench/results/hostile.json
    python bench/bench_hostile.py --minutes 1

The app (`create_app`, CPU renderer, `public=True`) is served by uvicorn in this process on a free loopback port,
with its folders (cache, runs, Gradio's upload folder) in a fresh temporary folder. Each round tries, through
HTTP only: server files named in every file input, outbound connections to a local port, a zeros-filled suite
zip (unpacked twice, then a second one over the budget), a zip with a bad CRC, an upload without a face, offers
that never connect plus a caller who waits in line as the chat page does, a grant flood, an SDP without a
fingerprint, text/plain bodies, a latency log of an unconnected call, bodies dropped midway, a 100 KB input
and the operator-only actions. Loopback only; every request has a timeout, rounds stop at `--minutes` or
`--max-requests`, whichever comes first.

The run fails (exit 1) if anything leaked (a canary from a server file in a response, a connection to the
local port, a traceback or server path in an error, "Exception in ASGI application" in the log), if a
legitimate request went unanswered, if files are left behind (upload copies, unfinished runs, partial
unpacks, another process's scratch) or if the visitors' disk use ends over its budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CANARY = "CANARY-server-file-41c9"
OUT = ROOT / "bench" / "results" / "hostile.json"
GHOST_IP, LEGIT_IP = "203.0.113.66", "198.51.100.7"  # documentation addresses, only ever in headers


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to keep probing (default 10)")
    ap.add_argument("--max-requests", type=int, default=20_000, help="stop after this many requests")
    ap.add_argument("--zip-mb", type=int, default=60, help="zeros in each suite zip (MB, unpacked)")
    ap.add_argument("--budget-mb", type=int, default=100, help="WORKBENCH_VISITOR_DISK_MB for the run")
    ap.add_argument("--out", type=Path, default=OUT)
    return ap.parse_args()


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.asgi_exceptions = 0

    def emit(self, record):
        if "Exception in ASGI application" in record.getMessage():
            self.asgi_exceptions += 1


class Hostile:
    def __init__(self, args, root: Path):
        self.args = args
        self.root = root
        self.count = Counter()  # what happened, by probe and outcome
        self.problems: list[str] = []
        self.requests = 0
        self.legit_waits: list[float] = []
        self.free_to_admit: list[float] = []
        self.peak_usage = 0

    # --- the app ------------------------------------------------------------------------------
    def start(self) -> None:
        import uvicorn

        from workbench.avatars.model import PrepParams
        from workbench.config import Settings
        from workbench.engine import Engine
        from workbench.ui.app import create_app

        self.settings = Settings(
            cache_dir=self.root / "cache",
            models_dir=self.root / "models",
            runs_dir=self.root / "runs",
            public=True,
            prepare_example=False,
            openai_api_key=None,
            openai_base_url=None,
            max_sessions=2,
            session_connect_timeout_s=3.0,
            visitor_disk_mb=self.args.budget_mb,
            max_upload_mb=max(100, self.args.zip_mb + 10),
        )
        engine = Engine(self.settings, renderer="cpu")
        self.app = create_app(engine, samples_dir=None)
        self.ui = self.app.state.workbench_ui
        self.rtc = self.app.state.realtime
        example = ROOT / "examples" / "yongen.mp4"
        self.avatar_id = engine.prepare(example, PrepParams(max_frames=8), owner="bench").avatar_id
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        # after uvicorn configured its logging, which replaces the handlers of its own loggers
        self.records = Records()
        logging.getLogger("uvicorn.error").addHandler(self.records)
        logging.getLogger().addHandler(self.records)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    # --- HTTP helpers -------------------------------------------------------------------------
    def http(self, method: str, path: str, **kw):
        import httpx

        self.requests += 1
        kw.setdefault("timeout", 120)
        return httpx.request(method, f"{self.base}{path}", **kw)

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            r = self.http("POST", "/gradio_api/upload", files={"files": (path.name, f)})
        r.raise_for_status()
        return {"path": r.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api: str, data: list) -> tuple[str, str]:
        import httpx

        r = self.http("POST", f"/gradio_api/call/{api}", json={"data": data})
        if r.status_code != 200:
            return "http", r.text
        self.requests += 1
        with httpx.stream("GET", f"{self.base}/gradio_api/call/{api}/{r.json()['event_id']}", timeout=300) as s:
            text = s.read().decode()
        event, payload = "", ""
        for line in text.splitlines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                payload = line.split(":", 1)[1].strip()
        return event, payload

    def check_error_text(self, probe: str, payload: str, event: str = "error") -> None:
        if CANARY in payload:
            self.problems.append(f"{probe}: a server file's content in a response")
        if event != "error":
            return
        if "Traceback" in payload or len(payload) > 1000 or str(self.root) in payload:
            self.problems.append(f"{probe}: an error that is not one short plain line: {payload[:200]}")

    def offer(self, sdp: str, holder: str, client: str = GHOST_IP, **body):
        """An offer from `client`: uvicorn takes X-Forwarded-For from a loopback peer (a proxy on this machine),
        so the server sees the ghosts and the legitimate caller as different addresses, as it would live."""
        grant = self.rtc.grant(self.avatar_id, holder=holder)
        return self.http(
            "POST",
            "/rtc/offer",
            json={"sdp": sdp, "type": "offer", "grant": grant, **body},
            headers={"X-Forwarded-For": client},
            timeout=30,
        )

    # --- probes -------------------------------------------------------------------------------
    def probe_server_files(self, secrets: dict[str, Path]) -> None:
        calls = {
            "prepare": [None, None, 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4],
            "run": ["upload", None, [], 0, "local", None],
            "cases_update": ["upload", None],
            "audio_length": [None, None],
            "grid": [None, 0, None, None, 0, "0", 10, "jaw", 90, 90, False, 1.0],
        }
        where = {"prepare": 1, "run": 1, "cases_update": 1, "audio_length": 1, "grid": 3}
        kind = {"prepare": "video", "audio_length": "audio", "grid": "audio"}
        for api, data in calls.items():
            data = list(data)
            data[where[api]] = {
                "path": str(secrets[kind.get(api, "yaml")]),
                "meta": {"_type": "gradio.FileData"},
            }
            event, payload = self.call(api, data)
            self.count[f"server_file/{api}/{event}"] += 1
            if event == "complete":
                self.problems.append(f"server file accepted by {api}")
            self.check_error_text(f"server_file/{api}", payload, event)

    def probe_egress(self, sdp: str, listener_port: int) -> None:
        for url in (f"ws://127.0.0.1:{listener_port}/v1", f"http://localhost:{listener_port}", "ws://10.0.0.1/v1"):
            r = self.offer(
                sdp, holder=f"mapper-{time.monotonic()}", mode="openai", api_key="sk-x", realtime={"base_url": url}
            )
            self.count[f"egress/{r.status_code}"] += 1
            if r.status_code == 200:
                self.problems.append(f"an offer to {url} was accepted")
                self.http("DELETE", f"/rtc/session/{r.json()['session_id']}", timeout=10)

    def probe_zips(self, bombs: list[Path], crc: Path) -> None:
        for bomb in bombs:
            up = self.upload(bomb)
            e1, p1 = self.call("cases_update", ["upload", up])
            e2, p2 = self.call("run", ["upload", up, [], 0, "local", None])
            self.count[f"zip/cases_update/{e1}"] += 1
            self.count[f"zip/run/{e2}"] += 1
            self.check_error_text("zip", p1, e1)
            self.check_error_text("zip", p2, e2)
        event, payload = self.call("run", ["upload", self.upload(crc), [], 0, "local", None])
        self.count[f"crc/{event}"] += 1
        if event != "error" or "damaged" not in payload:
            self.problems.append(f"a damaged zip was not refused plainly: {payload[:200]}")
        self.check_error_text("crc", payload)

    def probe_no_face(self, photo: Path) -> None:
        event, payload = self.call("prepare", [None, self.upload(photo), 0, 10, "jaw", 90, 90, "dlib", "landmarks", 4])
        self.count[f"no_face/{event}"] += 1
        self.check_error_text("no_face", payload)
        uploads = Path(self.settings.cache_dir) / "uploads"
        if uploads.is_dir() and any(uploads.iterdir()):
            self.problems.append("a failed preparation left its upload copy")

    def probe_line(self, sdp: str) -> None:
        """Ghost offers fill the slots and the line; a legitimate caller polls every 3 s like the page."""
        codes = Counter(self.offer(sdp, holder=f"ghost-{i}-{time.monotonic()}").status_code for i in range(8))
        for code, n in codes.items():
            self.count[f"line/ghost/{code}"] += n
        t0 = time.monotonic()
        ticket, free_since, done = None, [], threading.Event()

        def watch_slots():  # when a slot first stood free while the legitimate caller waited
            while not done.is_set() and not free_since:
                if len(self.rtc.sessions) < self.rtc.max_sessions:
                    free_since.append(time.monotonic())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_slots, daemon=True)
        try:
            while time.monotonic() - t0 < 60:
                r = self.offer(sdp, holder=f"legit-{t0}", client=LEGIT_IP, ticket=ticket)
                if r.status_code == 200:
                    now = time.monotonic()
                    self.legit_waits.append(now - t0)
                    if free_since:
                        self.free_to_admit.append(now - free_since[0])
                    self.count["line/legit/admitted"] += 1
                    self.http("DELETE", f"/rtc/session/{r.json()['session_id']}", timeout=10)
                    return
                self.count[f"line/legit/{r.status_code}"] += 1
                ticket = r.json().get("ticket") or ticket
                if not watcher.is_alive() and not free_since:
                    watcher.start()  # from the first refusal on: the caller is waiting
                time.sleep(3)
            self.problems.append("a legitimate caller waited a minute without a slot")
        finally:
            done.set()

    def probe_grants(self) -> None:
        good = self.rtc.grant(self.avatar_id, holder="good-browser", client="198.51.100.1")
        for i in range(self.rtc.max_grants + 10):
            self.rtc.grant(self.avatar_id, holder=f"flood-{i}", client="203.0.113.66")
        ok = self.rtc.granted_avatar(good) == self.avatar_id
        self.count[f"grants/good_survived/{ok}"] += 1
        if not ok:
            self.problems.append("a grant flood pushed out another visitor's chat link")

    def probe_small(self, sdp: str) -> None:
        no_fp = "\r\n".join(x for x in sdp.split("\r\n") if not x.startswith("a=fingerprint:"))
        self.count[f"small/no_fingerprint/{self.offer(no_fp, holder='nofp').status_code}"] += 1
        r = self.http(
            "POST", "/rtc/offer", content=b'{"sdp": "v=0"}', headers={"Content-Type": "text/plain"}, timeout=10
        )
        self.count[f"small/text_plain/{r.status_code}"] += 1
        for _ in range(3):
            self.requests += 1
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(
                    b"POST /rtc/offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n" + b'{"sdp": "' + b"v" * 500
                )
        self.count["small/dropped_bodies"] += 3
        event, payload = self.call("run", ["example", None, ["x" * 100_000], 0, "local", None])
        self.count[f"small/huge_input/{event}"] += 1
        self.check_error_text("huge_input", payload)
        for api, data in (("fetch", [""]), ("run", ["example", None, [], 1, "ray", ""])):
            event, payload = self.call(api, data)
            self.count[f"operator/{api}/{event}"] += 1
            if event != "error" or "operator" not in payload:
                self.problems.append(f"an operator action ({api}) was not refused: {payload[:200]}")

    def probe_latency_log(self, sdp: str) -> None:
        r = self.offer(sdp, holder=f"lat-{time.monotonic()}")
        if r.status_code != 200:
            self.count[f"latency/offer/{r.status_code}"] += 1
            return
        sid = r.json()["session_id"]
        self.count[f"latency/{self.http('POST', f'/rtc/session/{sid}/latency', timeout=10).status_code}"] += 1
        self.http("DELETE", f"/rtc/session/{sid}", timeout=10)

    def legit(self) -> None:
        """What a legitimate visitor does between the probes: it must always be answered."""
        for path in ("/rtc/config", "/config"):
            r = self.http("GET", path, timeout=30)
            self.count[f"legit/{path}/{r.status_code}"] += 1
            if r.status_code != 200:
                self.problems.append(f"a legitimate GET {path} got {r.status_code}")

    def usage(self) -> int:
        used = self.ui.ctx.disk.usage()
        self.peak_usage = max(self.peak_usage, used)
        return used


def make_inputs(folder: Path, zip_mb: int) -> dict:
    import cv2
    import numpy as np

    from testkit.runs import session_latency_log

    folder.mkdir(parents=True)
    secret_dir = folder / "server-secrets"
    secret_dir.mkdir()
    (secret_dir / "creds.yaml").write_text(f"name: {CANARY}\ncases: {CANARY}\n")
    shutil.copyfile(ROOT / "examples" / "yongen.mp4", secret_dir / "private.mp4")
    audio = next(p for p in sorted((ROOT / "examples").iterdir()) if p.suffix in (".wav", ".opus", ".ogg", ".mp3"))
    shutil.copyfile(audio, secret_dir / f"private{audio.suffix}")
    secrets = {
        "yaml": secret_dir / "creds.yaml",
        "video": secret_dir / "private.mp4",
        "audio": secret_dir / f"private{audio.suffix}",
    }
    bombs = []
    log = session_latency_log(folder / "s.jsonl")
    for k in range(2):
        bomb = folder / f"suite{k}.zip"
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(
                "suite/suite.yaml", f"name: bomb{k}\ncases:\n  - id: s\n    kind: latency_log\n    log: s.jsonl\n"
            )
            zf.write(log, "suite/s.jsonl")
            with zf.open("suite/zeros.bin", "w", force_zip64=True) as f:
                block = bytes(1024 * 1024)
                for _ in range(zip_mb):
                    f.write(block)
        bombs.append(bomb)
    crc = folder / "crc.zip"
    with zipfile.ZipFile(crc, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("suite/suite.yaml", "name: x\ncases: []\n")
        zf.writestr("suite/data.bin", b"A" * 100_000)
    raw = bytearray(crc.read_bytes())
    raw[raw.find(b"A" * 1000) + 500] = ord("B")
    crc.write_bytes(bytes(raw))
    photo = folder / "wall.png"
    cv2.imwrite(str(photo), np.full((240, 320, 3), 128, np.uint8))
    return {"secrets": secrets, "bombs": bombs, "crc": crc, "photo": photo}


def listener() -> tuple[socket.socket, list]:
    """A local port nobody should be sent to; counts who connects."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.5)
    accepted: list = []

    def run():
        while True:
            try:
                conn, _ = sock.accept()
                accepted.append(time.time())
                conn.close()
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=run, daemon=True).start()
    return sock, accepted


def leftovers(h: Hostile, root: Path) -> list[str]:
    found = []
    runs = Path(h.settings.runs_dir)
    found += [str(p) for p in runs.rglob(".*.tmp")]
    uploads = Path(h.settings.cache_dir) / "uploads"
    if uploads.is_dir():
        found += [str(p) for p in uploads.iterdir()]
    found += [str(p) for p in Path(tempfile.gettempdir()).glob(f"workbench-ui-{os.getpid()}-*")]
    return found


def main() -> int:
    args = parse_args()
    root = Path(tempfile.mkdtemp(prefix="wb-hostile-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")  # this run's upload folder, measured and removed
    h = Hostile(args, root)
    t_start = time.monotonic()
    inputs = make_inputs(root / "inputs", args.zip_mb)
    from testkit.realtime import offer_sdp  # after sys.path holds the repository (see the top)

    sdp = offer_sdp()
    sock, accepted = listener()
    h.start()
    deadline = time.monotonic() + args.minutes * 60
    rounds = 0
    usage_samples = []
    try:
        while time.monotonic() < deadline and h.requests < args.max_requests:
            rounds += 1
            for probe in (
                lambda: h.probe_server_files(inputs["secrets"]),
                lambda: h.probe_egress(sdp, sock.getsockname()[1]),
                lambda: h.probe_zips(inputs["bombs"], inputs["crc"]),
                lambda: h.probe_no_face(inputs["photo"]),
                lambda: h.probe_small(sdp),
                lambda: h.probe_latency_log(sdp),
                lambda: h.probe_line(sdp),
                h.probe_grants,
                h.legit,
            ):
                if time.monotonic() >= deadline or h.requests >= args.max_requests:
                    break
                probe()
                usage_samples.append(h.usage())
            print(
                f"round {rounds}: {h.requests} requests, {len(h.problems)} problems, "
                f"visitors' disk {usage_samples[-1] / 1e6:.0f} MB",
                flush=True,
            )
    finally:
        # the last job's files are protected for IN_USE_S; the app's next sweep (a job or a start) takes them
        time.sleep(1)
        end_usage = h.usage()
        from workbench.disk_budget import IN_USE_S

        h.stop()
        sock.close()
    from workbench.ui.eval_tab import UNPACKED_KEEP

    scratch = Path(h.ui.ctx.scratch.name)
    unpacked = list(scratch.glob("suite-*/unpacked-*"))
    if len(unpacked) > UNPACKED_KEEP:
        h.problems.append(f"{len(unpacked)} unpacked suites in the scratch (kept: at most {UNPACKED_KEEP})")
    h.ui.ctx.scratch.cleanup()  # what the process's exit does
    if accepted:
        h.problems.append(f"{len(accepted)} connections reached the local port")
    if h.records.asgi_exceptions:
        h.problems.append(f"{h.records.asgi_exceptions} 'Exception in ASGI application' in the log")
    left = leftovers(h, root)
    if left:
        h.problems.append(f"files left behind: {left[:5]}")
    budget = h.ui.ctx.disk.limit_bytes
    if end_usage > budget:
        h.problems.append(f"visitors' disk use ends at {end_usage / 1e6:.0f} MB, over the {budget / 1e6:.0f} MB budget")
    gradio_tmp = sum(f.stat().st_size for f in (root / "gradio").rglob("*") if f.is_file())
    result = {
        "minutes": round((time.monotonic() - t_start) / 60, 2),
        "rounds": rounds,
        "requests": h.requests,
        "outcomes": dict(sorted(h.count.items())),
        "problems": h.problems,
        "outbound_connections_to_local_port": len(accepted),
        "asgi_exceptions": h.records.asgi_exceptions,
        "legit_wait_s": {
            "n": len(h.legit_waits),
            "max": round(max(h.legit_waits), 2) if h.legit_waits else None,
            "mean": round(sum(h.legit_waits) / len(h.legit_waits), 2) if h.legit_waits else None,
        },
        "slot_free_to_legit_admitted_s": {
            "n": len(h.free_to_admit),
            "max": round(max(h.free_to_admit), 2) if h.free_to_admit else None,
        },
        "visitor_disk": {
            "budget_mb": round(budget / 1e6, 1),
            "peak_mb": round(h.peak_usage / 1e6, 1),
            "end_mb": round(end_usage / 1e6, 1),
            "in_use_protection_s": IN_USE_S,
        },
        "gradio_upload_folder_mb_at_end": round(gradio_tmp / 1e6, 1),
        "files_left_behind": left,
        "settings": {"zip_mb": args.zip_mb, "max_sessions": 2, "connect_timeout_s": 3.0, "queue_keep_s": 7.0},
        "ok": not h.problems,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("minutes", "rounds", "requests", "problems", "visitor_disk", "ok")}))
    shutil.rmtree(root, ignore_errors=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
