"""One disk budget for everything visitors of a shared app can make, and the sweeps that keep it.

What visitors make: the upload copies kept for preparation (`cache/uploads`), face detections
(`cache/detections`), the UI's scratch (clips, report zips, unpacked suites) and their evaluation runs
(`runs/sessions/<token>/<run>`). Prepared avatars have their own limit (`WORKBENCH_CACHE_MAX_MB`, the store's
LRU). Each top-level entry of these folders is one unit; when the total is over `WORKBENCH_VISITOR_DISK_MB`
the least recently touched units go first, except those touched within `IN_USE_S` and those a running job
holds (`DiskBudget.hold`). The app sweeps on start and after each job.

On start it also removes what killed processes left: the scratch folders of processes that are gone
(`workbench-ui-<pid>-…` in the temp folder) and evaluation runs that never finished (`.<run>.….tmp`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

IN_USE_S = 120.0  # a unit touched this recently may be in use by a running job: never evicted
LEGACY_SCRATCH_S = 24 * 3600  # a pid-less scratch folder (an older version's) untouched a day is abandoned
STALE_TMP_S = 15 * 60  # a run's temporary folder untouched this long was left by a killed process
SCRATCH_PREFIX = "workbench-ui-"
_SCRATCH_RE = re.compile(rf"^{SCRATCH_PREFIX}(\d+)-")
_RUN_TMP_RE = re.compile(r"^\..+\.tmp$")


def scratch_prefix() -> str:
    """This process's scratch folder prefix: the pid tells a later start whether its owner is gone."""
    return f"{SCRATCH_PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def _newest_mtime(p: Path) -> float:
    try:
        newest = p.lstat().st_mtime
        if p.is_dir() and not p.is_symlink():
            for f in p.rglob("*"):
                try:
                    newest = max(newest, f.lstat().st_mtime)
                except OSError:
                    continue
        return newest
    except OSError:
        return 0.0


def size_of(p: Path) -> int:
    try:
        if p.is_symlink() or p.is_file():
            return p.lstat().st_size
        total = 0
        for f in p.rglob("*"):
            try:
                if not f.is_symlink() and f.is_file():
                    total += f.stat().st_size
            except OSError:
                continue
        return total
    except OSError:
        return 0


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def sweep_dead_scratch(tmp_root: Path | None = None) -> list[str]:
    """Remove `workbench-ui-<pid>-*` scratch folders whose process is gone (and pid-less ones untouched a day)."""
    root = Path(tmp_root or tempfile.gettempdir())
    removed = []
    try:
        entries = [d for d in root.iterdir() if d.name.startswith(SCRATCH_PREFIX)]
    except OSError:
        return removed
    for d in entries:
        m = _SCRATCH_RE.match(d.name)
        if m is not None and _alive(int(m.group(1))):
            continue
        if m is None and time.time() - _newest_mtime(d) < LEGACY_SCRATCH_S:
            continue  # an older version's folder without a pid: only when clearly abandoned
        _remove(d)
        removed.append(d.name)
    if removed:
        log.info("removed %d scratch folders of processes that are gone", len(removed))
    return removed


def sweep_run_tmp(runs_dir: Path, older_than_s: float = STALE_TMP_S) -> list[str]:
    """Remove evaluation runs' temporary folders (`.<run>.<rand>.tmp`) a killed evaluation left behind."""
    runs_dir = Path(runs_dir)
    parents = [runs_dir]
    sessions = runs_dir / "sessions"
    if sessions.is_dir():
        parents += [d for d in sessions.iterdir() if d.is_dir()]
    now = time.time()
    removed = []
    for parent in parents:
        try:
            entries = [d for d in parent.iterdir() if _RUN_TMP_RE.match(d.name)]
        except OSError:
            continue
        for d in entries:
            if now - _newest_mtime(d) >= older_than_s:
                _remove(d)
                removed.append(d.name)
    return removed


@dataclass(frozen=True)
class Area:
    """A folder whose entries `depth` levels down are the units of eviction."""

    path: Path
    depth: int = 1

    def units(self) -> list[Path]:
        level = [self.path]
        for _ in range(self.depth):
            nxt = []
            for d in level:
                try:
                    nxt += [c for c in d.iterdir() if d.is_dir()]
                except OSError:
                    continue
            level = nxt
        return level


@dataclass
class SweepReport:
    before: int
    after: int
    removed: list[str] = field(default_factory=list)


class DiskBudget:
    """`limit_bytes` over the units of `areas`; thread-safe (jobs finish on Gradio's worker threads)."""

    def __init__(self, limit_bytes: int, areas: list[Area]):
        self.limit_bytes = int(limit_bytes)
        self.areas = list(areas)
        self._lock = threading.Lock()
        self._held: Counter[Path] = Counter()  # folders a running job reads or writes: never evicted

    @contextmanager
    def hold(self, *paths: Path) -> Iterator[None]:
        """Keep `paths` (and everything in them) from eviction while the block runs."""
        held = [Path(p).resolve() for p in paths]
        with self._lock:
            self._held.update(held)
        try:
            yield
        finally:
            with self._lock:
                self._held.subtract(held)
                self._held += Counter()  # drop the zeros

    def _is_held(self, unit: Path) -> bool:
        u = unit.resolve()
        return any(h == u or h in u.parents or u in h.parents for h in self._held)

    def _units(self) -> list[tuple[float, int, Path]]:
        out = []
        for area in self.areas:
            for u in area.units():
                out.append((_newest_mtime(u), size_of(u), u))
        return out

    def usage(self) -> int:
        return sum(size for _, size, _ in self._units())

    def sweep(self, reserve: int = 0) -> SweepReport:
        """Evict the least recently touched units until usage + `reserve` fits the limit (or only units in
        use are left)."""
        with self._lock:
            units = sorted(self._units())
            total = sum(size for _, size, _ in units)
            report = SweepReport(before=total, after=total)
            now = time.time()
            for mtime, size, u in units:
                if total + reserve <= self.limit_bytes:
                    break
                if now - mtime < IN_USE_S or self._is_held(u):
                    continue
                _remove(u)
                total -= size
                report.removed.append(u.name)
            report.after = total
        if report.removed:
            log.info(
                "disk budget: removed %d entries (%.0f → %.0f MB)",
                len(report.removed),
                report.before / 1e6,
                total / 1e6,
            )
        return report

    def room_for(self, n_bytes: int) -> bool:
        """Make room for `n_bytes` more if the budget allows it; False when it cannot fit."""
        return self.sweep(reserve=n_bytes).after + n_bytes <= self.limit_bytes
