"""Write bench/README.md from bench/results/*.json: one table per results file.

The numbers come only from the JSON (so the page cannot drift from the data); what each file measures is the
hand-written header below. `tests/test_bench_readme.py` regenerates the page and fails when the committed one differs.

    python bench/make_readme.py          # rewrite bench/README.md
    python bench/make_readme.py --check  # exit 1 if bench/README.md is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE / "README.md"

# Rows per table: enough for the key numbers, short enough to read; the rest stays in the JSON.
MAX_ROWS = 30
MAX_DEPTH = 4
MAX_TEXT = 100
# Sub-trees that are raw series or the machine (shown once, in the table's caption), not key numbers.
SKIP_KEYS = {"machine", "samples", "rows"}
DATE_KEYS = ("date", "time", "started", "when", "measured_at")

# name -> (what it measures, the script that writes it). Prose moved here from the README's benchmark section;
# the full context of every number is in docs/benchmarks.md.
DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "avatar-storage": (
        "Prepared-avatar storage for yongen.mp4 (268 frames, default PrepParams): size on disk per file, the JPEG "
        "frame pack's decode cost and PSNR, and the CPU renderer's per-frame cost from stored vs in-memory frames.",
        "bench/bench_frames.py",
    ),
    "bank-stream": (
        "The own-mouth bank in the stream vs a file render: share of consecutive frames, shape mismatch and sync "
        "correlation for a sweep of jump cost, candidates and look-ahead.",
        "bench/bench_bank_stream.py",
    ),
    "cpu-interior": (
        "Mouth interiors of the CPU renderer (drawn vs the bundled library vs the avatar's own): colour share, "
        "sharpness against the source, sync, face-box error. Its `box_calibration` and `box_diagnosis` keys come "
        "from `bench/bench_face_box.py`: dlib's face box on real clips (closed vs open and consecutive frames, beside "
        "a multiscale median/mean box and dlib's CNN detector) and on the still faces' failing open frames.",
        "bench/bench_interior.py",
    ),
    "cpu-realism-quiet": (
        "CPU renderer realism on the quiet machine after the own-mouth work: colour, sharpness and sync against the "
        "source per avatar, and speed by frame size.",
        "bench/bench_cpu.py",
    ),
    "cpu-renderer-quiet": (
        "Weight-free CPU renderer on the quiet machine: frames/s and CPU ms per frame on yongen 704x1216 incl. "
        "paste-back, first-frame latency, memory over a long stream, audio drive.",
        "bench/bench_cpu.py",
    ),
    "cpu-renderer": (
        "Weight-free CPU renderer: throughput, first frame after 40 ms of audio, RSS over a 10-minute stream, audio "
        "drive, realism and speed by frame size (target >= 50 frames/s per stream).",
        "bench/bench_cpu.py",
    ),
    "drift-2calls": (
        "Long-session A/V drift, two concurrent calls for 5 minutes through the real WebRTC path (level renderer): "
        "offsets of the call that drifted most, by RTP/sender reports and by arrival.",
        "bench/bench_drift.py --calls 2 --minutes 5",
    ),
    "drift-cpu": (
        "Long-session A/V drift through the real WebRTC path with the real CPU renderer on yongen (mouth signal: "
        "darkness of the mouth box): offset per minute by RTP/sender reports and by arrival, drift.",
        "bench/bench_drift.py --renderer cpu",
    ),
    "drift": (
        "Long-session A/V drift through the real WebRTC path (server + aiortc on loopback, echo voice, level "
        "renderer read from the picture): offset per minute by RTP/sender reports and by arrival, last - first "
        "minute, clock rates, skipped ticks, stalls.",
        "bench/bench_drift.py --minutes 10",
    ),
    "engine-cpu": (
        "MuseTalk stages at full size with random weights, CPU fp32: UNet and VAE decode per frame, Whisper block, "
        "VAE encode, landmarks (MuseTalk in real time needs a GPU).",
        "bench/bench_engine.py",
    ),
    "frame-cost": (
        "CPU renderer per-frame cost by interior and bank setting (drawn, library, bank with and without look-ahead).",
        "bench/bench_frame_cost.py",
    ),
    "hostile": (
        "A hostile-visitor run against a local app: request outcomes, problems found, disk left behind, how long a "
        "legitimate visitor waited.",
        "bench/bench_hostile.py",
    ),
    "musetalk_streaming_cost": (
        "What streaming costs MuseTalk's Whisper features: the incremental front end against the whole-file "
        "features, per block size and look-ahead.",
        "bench/musetalk_streaming_cost.py",
    ),
    "quality_gate": (
        "The quality gate's metrics on a clean render and on deliberately damaged ones (mouth delayed, blurred, "
        "lips jittered): each damage must move its metric.",
        "bench/bench_quality_gate.py",
    ),
    "ray": (
        "Evaluation on a local Ray cluster, the example suite twice (10 cases), 1 and 2 workers on 2 busy cores.",
        "bench/bench_ray.py",
    ),
    "realtime-cpu-lock": (
        "Streaming sessions with the CPU renderer under the render lock: first lip-synced frame after the first "
        "audio delta, sustained fps, stalls, per number of sessions.",
        "bench/bench_realtime.py",
    ),
    "realtime-cpu-reply50": (
        "One streaming session, a 50 s reply at 8x real time: peak RSS must not grow with the reply (compare "
        "realtime-cpu-reply6).",
        "bench/bench_realtime.py --sessions 1 --reply-seconds 50",
    ),
    "realtime-cpu-reply6": (
        "One streaming session, a 6 s reply at 8x real time: the peak-RSS baseline for realtime-cpu-reply50.",
        "bench/bench_realtime.py --sessions 1 --reply-seconds 6",
    ),
    "realtime-cpu-6-sessions": (
        "Issue 31's speed target: 4 / 5 / 6 streaming sessions with the CPU renderer on yongen (painted interior; "
        "no full-resolution pass in the stream) without the VP8 encode: stalls, first frame (target 6 sessions, "
        "no stalls, first frame <= 80 ms).",
        "bench/bench_realtime.py --sessions 4 5 6 --no-encode",
    ),
    "realtime-cpu-8-sessions": (
        "Where the CPU renderer's streaming sessions stop holding 25 fps on the 2-core machine, avatar frames kept "
        "decoded (FrameMemory): 7 and 8 sessions on yongen without the VP8 encode: stalls, first frame.",
        "bench/bench_realtime.py --sessions 7 8 --no-encode",
    ),
    "realtime-cpu-encode": (
        "The full WebRTC video path (resize to 720 lines and VP8 encode) with the CPU renderer, 3 / 4 / 5 "
        "sessions on yongen, avatar frames kept decoded: stalls, encoded fps, first frame.",
        "bench/bench_realtime.py --sessions 3 4 5",
    ),
    "realtime-cpu": (
        "Streaming sessions with the CPU renderer: first lip-synced frame after the first audio delta and sustained "
        "fps incl. VP8 encode, 1 / 2 / 3 sessions (targets <= 150 ms, 25 fps for >= 2 sessions).",
        "bench/bench_realtime.py",
    ),
    "soak-30min-quiet": (
        "Loopback calls for 30 minutes on the quiet machine: long replies, barge-ins, dropped browsers; RSS, "
        "threads, descriptors and sessions over time (flat, none left).",
        "bench/bench_soak.py --calls 2 --minutes 30",
    ),
    "soak-30min": (
        "Loopback calls for 30 minutes, 2 callers, on the shared machine: RSS, threads, descriptors, sessions.",
        "bench/bench_soak.py --calls 2 --minutes 30",
    ),
    "soak": (
        "Loopback calls for 15 minutes, 2 callers: RSS, threads, descriptors, sessions.",
        "bench/bench_soak.py --calls 2 --minutes 15",
    ),
    "sync_calibration": (
        "The weight-free sync metric's calibration: known audio shifts on development and fresh clips, how often the "
        "offset is recovered, per scheme (landmarks, mesh, fused) and window.",
        "bench/bench_sync_calibration.py",
    ),
    "voice-latency": (
        "Keyless spoken conversation: end of the user's speech to the first lip-synced frame of the answer, per "
        "stage (VAD hang-over, ASR, reply, first TTS chunk, first frame); target <= 700 ms.",
        "bench/bench_voice.py",
    ),
}


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _leaves(obj: object, prefix: str = "", depth: int = 0):
    """(dotted key, value) for each scalar, in the file's order; lists are summarised by length."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if depth == 0 and key in SKIP_KEYS:
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            if depth >= MAX_DEPTH and isinstance(value, (dict, list)):
                continue
            yield from _leaves(value, name, depth + 1)
    elif isinstance(obj, list):
        if obj and all(not isinstance(v, (dict, list)) for v in obj) and len(obj) <= 6:
            yield prefix, ", ".join(_fmt(v) for v in obj)
        else:
            yield prefix, f"({len(obj)} entries)"
    else:
        yield prefix, obj


def _caption(data: dict) -> str:
    bits = []
    machine = data.get("machine")
    if isinstance(machine, dict):
        for key in ("device", "cpus", "gpu", "platform", "python", "loadavg_start", "loadavg"):
            if key in machine:
                bits.append(
                    f"{key} {_fmt(machine[key]) if not isinstance(machine[key], list) else ', '.join(_fmt(v) for v in machine[key])}"
                )
    elif isinstance(machine, str):
        bits.append(_fmt(machine))
    for key in DATE_KEYS:
        if isinstance(data.get(key), (str, int, float)):
            bits.append(f"{key} {_fmt(data[key])}")
    return "; ".join(bits) if bits else "not recorded in the file"


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    name = path.stem
    what, script = DESCRIPTIONS.get(name, ("(no description yet: add one to bench/make_readme.py)", "?"))
    lines = [f"## {name}", "", f"`bench/results/{path.name}`, written by `{script}`. {what}", ""]
    if not isinstance(data, dict):
        data = {"value": data}
    lines += [f"Machine / date: {_caption(data)}.", "", "| key | value |", "|---|---|"]
    leaves = [(k, v) for k, v in _leaves(data) if k not in DATE_KEYS]
    for key, value in leaves[:MAX_ROWS]:
        lines.append(f"| `{key}` | {_fmt(value)} |")
    if len(leaves) > MAX_ROWS:
        lines.append(f"| … | {len(leaves) - MAX_ROWS} more values in the JSON |")
    return "\n".join(lines) + "\n"


def render(results: Path = RESULTS) -> str:
    files = sorted(results.glob("*.json"))
    head = [
        "# Benchmark results",
        "",
        "Generated by `bench/make_readme.py` from `bench/results/*.json`: do not edit by hand; run",
        "`python bench/make_readme.py` after a bench writes new results (a test fails when this page is stale).",
        "The context of each number (load, data, targets) is in [../docs/benchmarks.md](../docs/benchmarks.md).",
        "",
        "| results file | what it measures |",
        "|---|---|",
    ]
    for path in files:
        what = DESCRIPTIONS.get(path.stem, ("", ""))[0]
        head.append(f"| [{path.stem}](#{path.stem.lower()}) | {what} |")
    return "\n".join(head) + "\n\n" + "\n".join(section(p) for p in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if bench/README.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = README.read_text() if README.exists() else ""
        if current != text:
            print("bench/README.md is out of date: run python bench/make_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(text)
    print(f"wrote {README.relative_to(HERE.parent)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
