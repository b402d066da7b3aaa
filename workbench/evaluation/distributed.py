"""Run a suite's cases on a Ray cluster; the driver (runner.run_suite) writes the run folder as a local run does.

Workers are Ray actors, one pool per resource: a GPU pool for cases that need one (a generated case the MuseTalk
renderer draws, a case scored by SyncNet when its weights are present) and a CPU pool for the rest. Each actor
loads its scorers (face detector, landmark fitter, SyncNet) and ONE engine per renderer choice once, and reuses
them for every case it is given; the driver hands a case to whichever actor of the right pool is idle, so progress
comes back as cases finish.

A worker that dies (process killed, node lost) or fails outside the case's own error handling gets its case
retried once on a fresh actor; a second failure becomes a failed row with the error. A case that fails on its own
merits (unreadable video, no face) is an ordinary failed row, exactly as locally, and is not retried.

Media reach workers by path (`media="path"`: every node sees the suite's files at the same absolute paths, e.g. an
NFS mount) or through Ray's object store (`media="store"`: the driver reads each distinct file once, up to
`max_store_mb` each, and workers write it to a scratch folder of their own). Generated clips come back to the driver
as bytes and are written into the run folder there, so workers need no access to it.

Ray is an optional extra (`pip install .[ray]`); importing this module does not import Ray.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench import atomic, weights
from workbench.config import Settings
from workbench.evaluation.case import CaseOutput, Progress, run_case, scorer_device
from workbench.evaluation.errors import EvalError, ManifestError
from workbench.evaluation.manifest import GeneratedCase, Suite
from workbench.evaluation.scoring import Scorers

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a case whose worker fails is tried once more, on a fresh worker
ERROR_CHARS = 600  # Ray's errors carry whole remote tracebacks; the row keeps the start, details keep all
LOCAL = "local"  # `--ray` without an address: RAY_ADDRESS if set, else a Ray instance started on this machine


class RayUnavailable(EvalError, ValueError):
    """Ray is not installed, or the cluster cannot be reached (a setup problem, shown to the user as it is)."""


@dataclass(frozen=True)
class RayOptions:
    """How to use the cluster. `address`: "local" (see LOCAL), "auto" (the cluster `ray start` runs on this
    machine), "HOST:PORT" or "ray://HOST:PORT"."""

    address: str = LOCAL
    media: Literal["path", "store"] = "path"
    max_store_mb: float = 64.0  # per file, for media="store"
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0  # 0.5 packs two GPU workers on one GPU
    # the actor class: CaseWorker or a subclass (another setup per worker); it must take CaseWorker's arguments
    worker_cls: type | None = None


@dataclass
class DistributedOutput:
    outputs: dict  # case id -> case.CaseOutput
    weights: dict
    syncnet_note: str | None
    notes: list[str]
    workers: int
    metadata: dict = field(default_factory=dict)


def import_ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(
            "Ray is not installed: pip install '.[ray]' (or pip install ray) on the driver and every worker node"
        ) from e
    return ray


# --- the worker ---------------------------------------------------------------------------------
class CaseWorker:
    """One worker process: its scorers and ONE engine built once, then any number of cases (the engine keeps
    a renderer per renderer choice, so MuseTalk loads once per worker).

    Wrapped with `ray.remote` by the driver, so this module imports without Ray. A worker is an entry point:
    it builds its Settings from the driver's, serialised."""

    def __init__(self, settings_json: str, face_detector: str):
        self.settings = Settings.model_validate_json(settings_json)
        self.face_detector = face_detector
        self._scorers = None
        self._engine = None
        self._weights: dict | None = None
        self.scratch = Path(tempfile.mkdtemp(prefix="workbench-ray-"))
        atexit.register(shutil.rmtree, self.scratch, ignore_errors=True)  # runs when the driver ends the actor
        self.media: dict[str, Path] = {}  # object-store key -> local copy

    @property
    def scorers(self):
        """Built on the first case (the imports pull in torch and dlib), then kept; models inside load lazily."""
        if self._scorers is None:
            self._scorers = Scorers(self.settings.models_dir, scorer_device(self.settings), self.face_detector)
        return self._scorers

    @property
    def engine(self):
        """Built on first use, then kept: its renderers load once, on the first case that draws with each."""
        if self._engine is None:
            from workbench.engine import Engine

            self._engine = Engine(self.settings)
        return self._engine

    def info(self) -> dict:
        if self._weights is None:  # sha256 of ~50 MB files: once per worker, not per case
            self._weights = self.scorers.weight_hashes()
        return {
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "weights": self._weights,
            "syncnet_missing": self.scorers.syncnet_missing,
        }

    def _localise(self, case, suite: Suite, media: dict[str, tuple[str, str, object]]):
        """The case with each shipped file replaced by a local copy (written once per worker)."""
        ray = import_ray()
        update = {}
        for name, (key, basename, ref) in media.items():
            if key not in self.media:
                local = self.scratch / "media" / key / basename
                atomic.write_bytes(local, ray.get(ref))
                self.media[key] = local
            update[name] = self.media[key]
        return case.model_copy(update=update) if update else case

    def run(self, case, suite: Suite, media: dict) -> tuple:
        """(CaseOutput, {relative path: bytes} of the files the case wrote, worker info)."""
        case = self._localise(case, suite, media)
        case_dir = self.scratch / "cases" / case.id
        shutil.rmtree(case_dir, ignore_errors=True)
        out = run_case(case, suite, case_dir, self.scorers, self.engine)
        files = {}
        if case_dir.is_dir():
            files = {str(p.relative_to(case_dir)): p.read_bytes() for p in sorted(case_dir.rglob("*")) if p.is_file()}
            shutil.rmtree(case_dir, ignore_errors=True)
        return out, files, self.info()


# --- the driver ---------------------------------------------------------------------------------
def needs_gpu(case, suite: Suite, settings: Settings, syncnet_present: bool) -> bool:
    """A GPU case: MuseTalk draws it (the driver's view of models_dir, which every node must share) or SyncNet
    scores it."""
    # the engine's own choice: "auto" is MuseTalk exactly when its weights are present
    if isinstance(case, GeneratedCase) and (
        case.renderer == "musetalk" or (case.renderer == "auto" and weights.has_musetalk(Path(settings.models_dir)))
    ):
        return True
    return syncnet_present and "syncnet" in case.metrics


def _connect(ray, address: str) -> bool:
    """Connect (or start a local instance); True when this call started it and so must shut it down."""
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False}
    try:
        ray.init(address=None if address == LOCAL else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address!r}: {e}") from e
    return True


def _ship_media(ray, suite: Suite, options: RayOptions) -> dict[str, dict]:
    """case id -> {field: (key, basename, ObjectRef)}; each distinct file is put in the object store once."""
    if options.media == "path":
        return {c.id: {} for c in suite.cases}
    limit = int(options.max_store_mb * 1024 * 1024)
    refs: dict[Path, tuple[str, object]] = {}
    out: dict[str, dict] = {}
    for case in suite.cases:
        shipped = {}
        for name, path in suite.files_of(case).items():
            if not path.is_file():
                continue  # the worker reports it missing, as a local run does
            if path not in refs:
                size = path.stat().st_size
                if size > limit:
                    raise ManifestError(
                        f"case {case.id}: {path} is {size / 2**20:.1f} MiB, over the object-store limit of "
                        f"{options.max_store_mb} MiB per file; put the media on shared storage and use media=path"
                    )
                key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
                refs[path] = (key, ray.put(path.read_bytes()))
            key, ref = refs[path]
            shipped[name] = (key, path.name, ref)
        out[case.id] = shipped
    return out


def _lost_row(case, error: str) -> dict:
    return {
        "case": case.id,
        "kind": case.kind,
        "status": "failed",
        "error": error,
        "expected_offset": case.audio_shift_frames,
    }


def _pool_sizes(ray, counts: dict[str, int], max_workers: int, options: RayOptions) -> dict[str, int]:
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 0) // max(options.cpus_per_worker, 1e-9))
    gpus = int(resources.get("GPU", 0) // max(options.gpus_per_worker, 1e-9)) if options.gpus_per_worker else 0
    cap = max_workers if max_workers > 0 else 10**9
    sizes = {"gpu": min(counts["gpu"], gpus, cap)}
    # GPU workers take CPUs too; the CPU pool gets what is left (at least one worker when it has cases)
    left = max(cpus - sizes["gpu"], 1)
    sizes["cpu"] = min(counts["cpu"], left, max(cap - sizes["gpu"], 1)) if counts["cpu"] else 0
    return sizes


def run_cases_on_ray(
    suite: Suite,
    run_dir: Path,
    settings: Settings,
    face_detector: str,
    options: RayOptions,
    max_workers: int = 0,
    progress: Progress | None = None,
) -> DistributedOutput:
    """Evaluate every case on the cluster; write each case's files under run_dir/cases/<id>/."""
    ray = import_ray()
    started = _connect(ray, options.address)
    try:
        probe = Scorers(settings.models_dir, None, face_detector).weight_hashes()
        syncnet_present = probe["syncnet_v2.model"] != "none"
        pools = {c.id: "gpu" if needs_gpu(c, suite, settings, syncnet_present) else "cpu" for c in suite.cases}
        notes: list[str] = []
        if "gpu" in pools.values() and not ray.cluster_resources().get("GPU", 0):
            notes.append("the Ray cluster has no GPU: cases that want one (MuseTalk, SyncNet) ran on CPU workers")
            pools = dict.fromkeys(pools, "cpu")
        counts = {p: sum(1 for v in pools.values() if v == p) for p in ("gpu", "cpu")}
        sizes = _pool_sizes(ray, counts, max_workers, options)
        cls = ray.remote(options.worker_cls or CaseWorker)
        settings_json = settings.model_dump_json()

        def new_worker(pool: str):
            gpus = options.gpus_per_worker if pool == "gpu" else 0
            # max_restarts=0: a dead worker is replaced by the driver, which decides about the retry
            return cls.options(num_cpus=options.cpus_per_worker, num_gpus=gpus, max_restarts=0).remote(
                settings_json, face_detector
            )

        media = _ship_media(ray, suite, options)  # first: a file too large for the store fails before any worker
        idle: dict[str, list] = {p: [new_worker(p) for _ in range(n)] for p, n in sizes.items()}
        queue = {p: [c for c in suite.cases if pools[c.id] == p] for p in ("gpu", "cpu")}
        attempts: dict[str, int] = {}
        inflight: dict = {}  # ObjectRef -> (case, pool, actor)
        outputs: dict[str, CaseOutput] = {}
        infos: list[dict] = []
        n = len(suite.cases)
        if progress:
            progress(0.0, f"{sizes['cpu']} CPU + {sizes['gpu']} GPU Ray workers")

        def dispatch() -> None:
            for pool in ("gpu", "cpu"):
                while queue[pool] and idle[pool]:
                    case, actor = queue[pool].pop(0), idle[pool].pop()
                    attempts[case.id] = attempts.get(case.id, 0) + 1
                    one = Suite(name=suite.name, cases=[case], root=suite.root)  # only what the case needs
                    inflight[actor.run.remote(case, one, media[case.id])] = (case, pool, actor)

        dispatch()
        while inflight:
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            case, pool, actor = inflight.pop(ref)
            try:
                out, files, info = ray.get(ref)
            except ray.exceptions.RayError as e:
                died = isinstance(e, ray.exceptions.RayActorError)
                what = "worker lost" if died else "worker failed"
                log.warning("case %s: %s (attempt %d of %d): %s", case.id, what, attempts[case.id], MAX_ATTEMPTS, e)
                if attempts[case.id] < MAX_ATTEMPTS:
                    queue[pool].insert(0, case)
                if not died:
                    idle[pool].append(actor)
                elif queue[pool]:  # a dead worker is replaced only while its pool has work left
                    idle[pool].append(new_worker(pool))
                if attempts[case.id] >= MAX_ATTEMPTS:
                    msg = f"{what} twice: {type(e).__name__}: {e}"
                    trace = "".join(traceback.format_exception(e))
                    outputs[case.id] = CaseOutput(
                        _lost_row(case, msg[:ERROR_CHARS]), {"case": case.id, "traceback": trace}
                    )
                    if progress:
                        progress(len(outputs) / n, f"{case.id}: failed")
                dispatch()
                continue
            idle[pool].append(actor)
            for rel, data in files.items():
                atomic.write_bytes(run_dir / "cases" / case.id / rel, data)
            outputs[case.id] = out
            infos.append(info)
            if progress:
                progress(len(outputs) / n, f"{case.id}: {out.row['status']}")
            dispatch()
        for actor in (a for pool in idle.values() for a in pool):
            actor.__ray_terminate__.remote()  # a graceful exit: the worker's scratch folder goes with it
    finally:
        if started:
            ray.shutdown()

    weights = infos[0]["weights"] if infos else probe
    differing = sorted({k for i in infos for k, v in i["weights"].items() if weights.get(k) != v})
    if differing:
        notes.append(f"Ray workers disagree on weight files {', '.join(differing)}: nodes hold different copies")
    syncnet_note = next((i["syncnet_missing"] for i in infos if i["syncnet_missing"]), None)
    nodes = sorted({i["node"] for i in infos})
    meta = {
        "address": options.address,
        "media": options.media,
        "workers": {p: s for p, s in sizes.items() if s},
        "nodes": nodes,
        "worker_processes": len({(i["node"], i["pid"]) for i in infos}),
        "retried": sorted(c for c, k in attempts.items() if k > 1),
    }
    return DistributedOutput(outputs, weights, syncnet_note, notes, sum(sizes.values()), meta)
