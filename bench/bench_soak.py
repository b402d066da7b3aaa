"""Soak benchmark: many local-mode realtime calls over loopback for a set time; is anything leaking?

    .venv/bin/python bench/bench_soak.py --calls 3 --minutes 30
    .venv/bin/python bench/bench_soak.py --calls 2 --minutes 10 --max-sessions 2

The server is the real realtime endpoint (FastAPI + aiortc, `workbench.realtime.server`) with the CPU renderer
and an avatar of yongen.mp4, served by uvicorn on 127.0.0.1 in a child process, so that what is sampled is the
server alone. In this process, `--calls` callers (aiortc peers speaking HTTP and WebRTC over loopback, as a
browser does) each loop for the whole run through:

* a call in *echo* mode with a long reply (about 25 s of espeak-ng speech), watched for a while;
* a barge-in (the stop button, or a new message over the reply);
* an ending drawn at random: a clean hang-up (DELETE), a dropped browser (the peer closes without saying
  goodbye) or an abandoned offer (never connected: the server must reclaim the slot by itself);
* a reconnect straight away.

Every `--sample-s` seconds the server's RSS, thread count, open file descriptors and live sessions are
sampled (Linux /proc). At the end all callers stop, the server is given `--settle-s` to reclaim what is left,
and a last sample is taken. Written to bench/results/soak.json: the samples, the calls made, and a summary
(RSS over the first and last quarters, the largest thread and fd counts, what was left at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES = ROOT.parent / "shared" / "samples"
LONG_REPLY = (
    "This is a long answer from the avatar, spoken by the local voice so that the soak test needs no key. "
    "It goes on for a while, sentence after sentence, so that every call renders many seconds of lip-synced "
    "speech while the test barges in, hangs up, drops the browser or reconnects. Memory must stay flat. "
    "Threads must come back. Sessions must be closed when their browsers are gone, whatever way they went. "
    "The clock keeps ticking at twenty five frames a second and the frames go out over WebRTC on loopback."
)


# ---- the server (child process) ---------------------------------------------------------------
def serve(port: int, max_sessions: int, frames: int, runs_dir: Path, cache_dir: Path) -> None:
    import logging

    import uvicorn
    from fastapi import FastAPI

    from workbench.avatars.model import PrepParams
    from workbench.config import Settings
    from workbench.engine import Engine
    from workbench.realtime.server import mount_realtime

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(
        renderer="cpu",
        runs_dir=runs_dir,
        cache_dir=cache_dir,
        max_sessions=max_sessions,
        openai_api_key=None,
        session_connect_timeout_s=10.0,
    )
    engine = Engine(settings)
    engine.prepare(SAMPLES / "yongen.mp4", PrepParams(max_frames=frames))
    app = FastAPI()
    mount_realtime(app, engine, settings, open_avatars=True)
    print("READY", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---- sampling ---------------------------------------------------------------------------------
def proc_sample(pid: int) -> dict:
    page = os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * page / 2**20
    threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_mb": round(rss, 1), "threads": threads, "fds": fds}


# ---- the callers (this process) ---------------------------------------------------------------
class Caller:
    def __init__(self, n: int, base: str, rng: random.Random, stats: dict):
        self.n, self.base, self.rng, self.stats = n, base, rng, stats

    async def offer(self, http, pc, connect: bool) -> str | None:
        from aiortc import RTCSessionDescription

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer", "mode": "echo"}
        for _ in range(40):  # a busy server puts us in line: keep our place, as the page does
            r = await http.post(f"{self.base}/rtc/offer", json=body)
            if r.status_code != 503:
                break
            self.stats["busy_answers"] += 1
            body["ticket"] = r.json().get("ticket") or body.get("ticket")
            await asyncio.sleep(r.json().get("retry_after_s", 3))
        if r.status_code != 200:
            self.stats["refused"][str(r.status_code)] = self.stats["refused"].get(str(r.status_code), 0) + 1
            return None
        answer = r.json()
        if connect:
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return answer["session_id"]

    async def one_call(self, http) -> None:
        from aiortc import AudioStreamTrack, RTCPeerConnection

        pc = RTCPeerConnection()
        frames = {"video": 0, "audio": 0}

        @pc.on("track")
        def _on_track(track):
            async def pull():
                while True:
                    try:
                        await track.recv()
                    except Exception:
                        return
                    frames[track.kind] += 1

            asyncio.ensure_future(pull())

        pc.addTransceiver("video", direction="recvonly")
        pc.addTrack(AudioStreamTrack())
        channel = pc.createDataChannel("chat")
        ending = self.rng.choice(["hangup", "hangup", "drop", "abandon"])
        sid = await self.offer(http, pc, connect=ending != "abandon")
        if sid is None:
            await pc.close()
            return
        self.stats["calls"] += 1
        self.stats["endings"][ending] += 1
        if ending == "abandon":
            await pc.close()  # the offer never connects: the server must reclaim the slot on its own
            return
        t0 = time.monotonic()
        while channel.readyState != "open" and time.monotonic() - t0 < 15:
            await asyncio.sleep(0.05)
        if channel.readyState != "open":
            self.stats["no_channel"] += 1
            await pc.close()
            return
        channel.send(json.dumps({"type": "text", "text": LONG_REPLY}))
        await asyncio.sleep(self.rng.uniform(4, 12))
        if self.rng.random() < 0.5:
            channel.send(json.dumps({"type": "interrupt"}))
        else:
            channel.send(json.dumps({"type": "text", "text": LONG_REPLY[:200]}))
        self.stats["barge_ins"] += 1
        await asyncio.sleep(self.rng.uniform(2, 8))
        self.stats["video_frames"] += frames["video"]
        if ending == "hangup":
            await http.delete(f"{self.base}/rtc/session/{sid}")
        await pc.close()  # "drop": gone without a word, like a closed tab

    async def run(self, http, until: float) -> None:
        while time.monotonic() < until:
            try:
                await self.one_call(http)
            except Exception as exc:  # keep soaking; the failure is counted and reported
                self.stats["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
            await asyncio.sleep(self.rng.uniform(0.2, 1.5))


async def soak(args: argparse.Namespace, pid: int, base: str) -> dict:
    import httpx

    stats = {
        "calls": 0,
        "barge_ins": 0,
        "busy_answers": 0,
        "no_channel": 0,
        "video_frames": 0,
        "endings": {"hangup": 0, "drop": 0, "abandon": 0},
        "refused": {},
        "errors": [],
    }
    samples = []

    async with httpx.AsyncClient(timeout=30) as http:

        async def sample(phase: str) -> None:
            s = proc_sample(pid)
            cfg = (await http.get(f"{base}/rtc/config")).json()
            samples.append(
                {"t_s": round(time.monotonic() - t_start, 1), "phase": phase, **s, "sessions": cfg["active_sessions"]}
            )

        t_start = time.monotonic()
        await sample("start")
        until = t_start + 60 * args.minutes
        callers = [Caller(i, base, random.Random(args.seed + i), stats) for i in range(args.calls)]
        tasks = [asyncio.create_task(c.run(http, until)) for c in callers]
        while time.monotonic() < until:
            await asyncio.sleep(args.sample_s)
            await sample("soak")
            print(json.dumps(samples[-1]), flush=True)
        await asyncio.gather(*tasks)
        await asyncio.sleep(args.settle_s)
        await sample("settled")
    return {"stats": stats, "samples": samples}


def summarize(samples: list[dict]) -> dict:
    import numpy as np

    soak_s = [s for s in samples if s["phase"] == "soak"]
    q = max(1, len(soak_s) // 4)
    first, last = soak_s[:q], soak_s[-q:]
    end = samples[-1]
    return {
        "rss_mb_start": samples[0]["rss_mb"],
        "rss_mb_first_quarter_median": float(np.median([s["rss_mb"] for s in first])) if first else None,
        "rss_mb_last_quarter_median": float(np.median([s["rss_mb"] for s in last])) if last else None,
        "rss_mb_max": max(s["rss_mb"] for s in samples),
        "threads_start": samples[0]["threads"],
        "threads_max": max(s["threads"] for s in samples),
        "threads_end": end["threads"],
        "fds_start": samples[0]["fds"],
        "fds_max": max(s["fds"] for s in samples),
        "fds_end": end["fds"],
        "sessions_max": max(s["sessions"] for s in samples),
        "sessions_end": end["sessions"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3, help="concurrent callers")
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--max-sessions", type=int, default=4)
    ap.add_argument("--frames", type=int, default=50, help="avatar frames taken from yongen.mp4")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--settle-s", type=float, default=20.0, help="wait for the server to reclaim calls at the end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    ap.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)  # internal: the child process
    ap.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve is not None:
        serve(args.serve, args.max_sessions, args.frames, args.work / "runs", args.work / "cache")
        return

    import tempfile

    from workbench import atomic

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port),
            "--work",
            str(work),
            "--max-sessions",
            str(args.max_sessions),
            "--frames",
            str(args.frames),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip() == "READY":
                break
        time.sleep(2.0)  # uvicorn binds after READY
        t0 = time.time()
        result = asyncio.run(soak(args, child.pid, f"http://127.0.0.1:{port}"))
    finally:
        child.terminate()
        child.wait(timeout=20)
    logs = sorted((work / "runs" / "realtime").glob("*.jsonl")) if (work / "runs" / "realtime").is_dir() else []
    summary = {
        "config": {k: v for k, v in vars(args).items() if k not in ("serve", "work", "out")},
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_end": os.getloadavg()[0]},
        "summary": summarize(result["samples"]),
        "latency_logs_written": len(logs),
        **result,
    }
    atomic.write_json(args.out, summary)
    print(json.dumps(summary["summary"], indent=1))
    print(
        f"calls {result['stats']['calls']}, endings {result['stats']['endings']}, errors {len(result['stats']['errors'])}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
