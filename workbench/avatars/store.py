"""The avatar store: prepared avatars and face detections on disk, keyed by content. It only stores:
the preparation pipeline (`workbench.avatars.pipeline.prepare_avatar`) decides what to compute and asks it.

Layout under `root`:
    avatars/<id>/      meta.json + boxes, landmarks, has_face, crops, masks[, latents] as .npy, and the full
                       frames as JPEGs packed in one file (`avatars/frames.py`; format 1 stored frames.npy,
                       still read)
    detections/<key>/  meta.json + boxes, landmarks, found as .npy

An avatar id (made by the pipeline) is the sha256 of the source's content plus a hash of its PrepParams
and of the detector / VAE / face-parser identities. Detections are keyed by content, frame cap and detector
only, so preparing the same clip with another bbox_shift or mask mode runs no detector at all. Every folder is written through `atomic.atomic_dir`: an interrupted
preparation leaves no half-written avatar behind.

With `max_bytes` the cache keeps itself under a size: after each save the least recently used avatars
(by `meta.json`'s mtime, which `load` refreshes) are deleted until it fits, never the one just saved and
never one whose source digest is pinned (the bundled examples and samples, see `pin_sources`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from workbench import atomic
from workbench.avatars import frames as packed
from workbench.avatars.frame_memory import FrameMemory
from workbench.avatars.model import Avatar, Detections, PrepParams
from workbench.faces.landmarks import LandmarkDetector
from workbench.media import source_digest

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: frames as a JPEG pack (frames.py); 1: frames.npy
_ARRAYS = ("boxes", "landmarks", "has_face", "crops", "masks")  # besides the frames
_ID_RE = re.compile(r"^[0-9a-f][0-9a-f-]{7,80}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Temporary folders (`atomic_dir`'s `.<id>.<rand>.tmp`, a delete's `.<id>.deleted-<pid>`, a replace's
# `.<id>.old-<pid>`) untouched for this long were left by a killed process: a save that is still running
# writes into its folder all the time, and no save takes this long.
STALE_TEMP_S = 15 * 60
_TEMP_RE = re.compile(r"^\..+\.(tmp|deleted-\d+|old-\d+)$")


class CacheError(RuntimeError):
    """A cache entry is unreadable or the id is not one the cache could have made."""


class AvatarNotFoundError(CacheError, KeyError):
    """No prepared avatar has this id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "avatar not found"


@dataclass(frozen=True)
class AvatarInfo:
    """What `AvatarCache.list` tells about a cached avatar without loading its arrays."""

    avatar_id: str
    source: str
    n_frames: int
    params: dict
    bbox_range: tuple[int, int]
    created: str  # ISO 8601, UTC
    size_bytes: int
    mask_kind: str
    has_latents: bool
    fps: float
    frame_size: tuple[int, int]  # (height, width)
    source_digest: str | None = None  # content hash of the source it was prepared from
    name: str = ""  # readable and unique in the cache (default: the source file's stem); accepted as an id
    owner: str | None = None  # who prepared it (the app's browser session); None: from the CLI or older

    @property
    def id(self) -> str:
        return self.avatar_id


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class AvatarCache:
    def __init__(self, root: str | Path, max_bytes: int | None = None, frame_memory: FrameMemory | None = None):
        self.root = Path(root)
        self.frame_memory = frame_memory  # where loaded avatars keep their frames decoded (None: a few each)
        self.avatars_dir = self.root / "avatars"
        self.detections_dir = self.root / "detections"
        self.max_bytes = max_bytes  # None: no limit
        self._digests: dict[tuple, str] = {}
        self._pinned: set[str] = set()
        self.swept = self.sweep_temp()

    def sweep_temp(self, older_than_s: float = STALE_TEMP_S) -> list[str]:
        """Remove temporary folders a killed save or delete left behind; returns their names."""
        removed = []
        now = time.time()
        for parent in (self.avatars_dir, self.detections_dir):
            try:
                entries = [d for d in parent.iterdir() if _TEMP_RE.match(d.name)]
            except OSError:
                continue
            for d in entries:
                try:
                    newest = max([d.stat().st_mtime] + [f.stat().st_mtime for f in d.rglob("*")])
                except OSError:
                    continue  # went away meanwhile
                if now - newest < older_than_s:
                    continue  # perhaps another process is writing it right now
                if d.is_dir():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink(missing_ok=True)
                log.info("removed a stale temporary cache folder %s", d)
                removed.append(d.name)
        return removed

    def pin_sources(self, digests) -> None:
        """Source digests whose avatars eviction never deletes (the examples every visitor sees)."""
        self._pinned.update(digests)

    # --- keys ---------------------------------------------------------------------------------
    def digest(self, source: str | Path | np.ndarray) -> str:
        """The source's content hash, remembered per (path, size, mtime) so a big file is hashed once."""
        if isinstance(source, np.ndarray):
            return source_digest(source)
        p = Path(source).resolve()
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        stamp = (str(p),) + tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
        if stamp not in self._digests:
            self._digests[stamp] = source_digest(p)
        return self._digests[stamp]

    def _avatar_path(self, avatar_id: str) -> Path:
        if isinstance(avatar_id, str) and not _ID_RE.match(avatar_id) and _NAME_RE.match(avatar_id):
            avatar_id = self.resolve(avatar_id)
        elif isinstance(avatar_id, str) and _ID_RE.match(avatar_id) and not (self.avatars_dir / avatar_id).is_dir():
            avatar_id = self._expand_short(avatar_id) or avatar_id
        if not isinstance(avatar_id, str) or not _ID_RE.match(avatar_id):
            raise AvatarNotFoundError(f"{avatar_id!r} is not an avatar id or name")
        return self.avatars_dir / avatar_id

    def _expand_short(self, short: str) -> str | None:
        """The one avatar id that `short` abbreviates: the app's `<6 hex>-<6 hex>` (the start of each half of
        `<content hash>-<parameters hash>`) or a plain prefix of the id; None when none or several match."""
        if not self.avatars_dir.is_dir():
            return None
        head, _, tail = short.partition("-")
        ids = [d.name for d in self.avatars_dir.iterdir() if d.is_dir() and not d.name.startswith(".")]
        hits = {i for i in ids if i.startswith(short)}
        if tail:
            hits |= {i for i in ids if i.partition("-")[0].startswith(head) and i.partition("-")[2].startswith(tail)}
        return hits.pop() if len(hits) == 1 else None

    def resolve(self, name_or_id: str) -> str:
        """The id of the avatar called `name_or_id`: its readable name, its id, or the short id the app shows."""
        if isinstance(name_or_id, str) and _ID_RE.match(name_or_id) and (self.avatars_dir / name_or_id).is_dir():
            return name_or_id
        for info in self.list():
            if info.name == name_or_id:
                return info.avatar_id
        if isinstance(name_or_id, str) and _ID_RE.match(name_or_id) and (full := self._expand_short(name_or_id)):
            return full
        raise AvatarNotFoundError(f"no prepared avatar named {name_or_id!r} in {self.avatars_dir}")

    def unique_name(self, wanted: str, avatar_id: str | None = None) -> str:
        """`wanted` made a valid name no other avatar has (yongen, yongen-2, …)."""
        base = _NAME_CHARS.sub("_", wanted).strip("._-")[:56] or "avatar"
        if not base[0].isalnum():
            base = f"a{base}"
        taken = {i.name for i in self.list() if i.avatar_id != avatar_id}
        name, k = base, 2
        while name in taken or _ID_RE.match(name):  # a name that looks like an id would shadow one
            name, k = f"{base}-{k}", k + 1
        return name

    @staticmethod
    def detection_key(digest: str, detector: LandmarkDetector | str, max_frames: int | None) -> str:
        ident = detector if isinstance(detector, str) else detector.identity
        blob = f"{digest}|{ident}|{max_frames}"
        return f"{digest[:16]}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    # --- detections -----------------------------------------------------------------------------
    def load_detections(self, key: str) -> Detections | None:
        d = self.detections_dir / key
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            return Detections(
                detector=meta["detector"],
                boxes=np.load(d / "boxes.npy"),
                landmarks=np.load(d / "landmarks.npy"),
                found=np.load(d / "found.npy"),
                seconds=float(meta.get("seconds", 0.0)),
            )
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable detections %s: %s", d, e)
            return None

    def save_detections(self, key: str, det: Detections, source: str = "") -> None:
        with atomic.atomic_dir(self.detections_dir / key) as tmp:
            np.save(tmp / "boxes.npy", det.boxes)
            np.save(tmp / "landmarks.npy", det.landmarks)
            np.save(tmp / "found.npy", det.found)
            atomic.write_json(
                tmp / "meta.json",
                {
                    "detector": det.detector,
                    "n_frames": len(det),
                    "n_found": int(det.found.sum()),
                    "seconds": det.seconds,
                    "source": source,
                    "created": datetime.now(timezone.utc).isoformat(),
                },
            )

    # --- avatars --------------------------------------------------------------------------------
    def has(self, avatar_id: str) -> bool:
        try:
            return (self._avatar_path(avatar_id) / "meta.json").is_file()
        except AvatarNotFoundError:
            if isinstance(avatar_id, str) and _NAME_RE.match(avatar_id):
                return False  # a well-formed name nobody has
            raise

    def _shared_frames(self, avatar: Avatar) -> Path | None:
        """The folder of an existing avatar of the same source and frame cap whose packed frames can be
        hard-linked instead of encoded again."""
        if isinstance(avatar.frames, packed.EncodedFrames):
            return avatar.frames.folder
        digest = avatar.extras.get("source_digest")
        if not digest or not self.avatars_dir.is_dir():
            return None
        for d in self.avatars_dir.iterdir():
            meta_path = d / "meta.json"
            if d.name.startswith(".") or d.name == avatar.avatar_id or not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError):
                continue
            if (
                meta.get("extras", {}).get("source_digest") == digest
                and meta.get("params", {}).get("max_frames") == avatar.params.max_frames
                and meta.get("n_frames") == len(avatar)
                and packed.has_frames(d)
            ):
                return d
        return None

    @staticmethod
    def _link_frames(shared: Path, dest: Path) -> bool:
        """Hard-link (else copy) another avatar's packed frames into `dest`; False if they vanished meanwhile."""
        try:
            for name in (packed.PACK_NAME, packed.INDEX_NAME):
                try:
                    os.link(shared / name, dest / name)
                except OSError:
                    shutil.copyfile(shared / name, dest / name)  # another file system, or no hard links
            return True
        except OSError:
            return False

    def save(self, avatar: Avatar) -> Path:
        """Write the avatar atomically; returns its folder."""
        final = self._avatar_path(avatar.avatar_id)
        shared = self._shared_frames(avatar)
        with atomic.atomic_dir(final) as tmp:
            if shared is None or not self._link_frames(shared, tmp):
                packed.write_frames(avatar.frames, tmp)
            for name in _ARRAYS:
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(avatar, name)))
            if avatar.latents is not None:
                np.save(tmp / "latents.npy", np.ascontiguousarray(avatar.latents, dtype=np.float32))
            atomic.write_json(
                tmp / "meta.json",
                {
                    "format_version": FORMAT_VERSION,
                    "avatar_id": avatar.avatar_id,
                    "source": avatar.source,
                    "params": avatar.params.to_dict(),
                    "fps": avatar.fps,
                    "n_frames": len(avatar),
                    "frame_size": list(avatar.frame_size),
                    "bbox_range": list(avatar.bbox_range),
                    "mask_kind": avatar.mask_kind,
                    "has_latents": avatar.latents is not None,
                    "created": datetime.now(timezone.utc).isoformat(),
                    "frames_codec": packed.CODEC,
                    "extras": avatar.extras,
                },
            )
        if self.max_bytes is not None:
            self.evict(self.max_bytes, keep={avatar.avatar_id})
        return final

    def stored_frames(self, avatar_id: str, frame_size: tuple[int, int]) -> packed.EncodedFrames | np.ndarray:
        """A saved avatar's full frames as `load` gives them (decoded on access)."""
        d = self._avatar_path(avatar_id)
        if packed.has_frames(d):
            return packed.EncodedFrames(d, frame_size, memory=self.frame_memory)
        return np.load(d / "frames.npy", mmap_mode="r")

    def load(self, avatar_id: str, mmap: bool = True) -> Avatar:
        """A cached avatar; its full frames decode on access (`EncodedFrames`). An avatar of format 1 has them
        as frames.npy: with `mmap` mapped read-only rather than read into memory."""
        d = self._avatar_path(avatar_id)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise AvatarNotFoundError(f"no prepared avatar {avatar_id!r} in {self.avatars_dir}")
        try:
            meta = json.loads(meta_path.read_text())
            arrays = {name: np.load(d / f"{name}.npy") for name in _ARRAYS}
            if packed.has_frames(d):
                arrays["frames"] = packed.EncodedFrames(d, tuple(meta["frame_size"]), memory=self.frame_memory)
            else:
                arrays["frames"] = np.load(d / "frames.npy", mmap_mode="r" if mmap else None)
            latents = np.load(d / "latents.npy") if meta.get("has_latents") else None
            params = PrepParams(**meta["params"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CacheError(f"cached avatar {avatar_id} is unreadable ({e}); delete it and prepare again") from e
        self._touch(meta_path)
        return Avatar(
            avatar_id=meta["avatar_id"],
            source=meta["source"],
            params=params,
            fps=float(meta["fps"]),
            latents=latents,
            bbox_range=tuple(meta["bbox_range"]),
            mask_kind=meta["mask_kind"],
            extras=dict(meta.get("extras", {})),
            **arrays,
        )

    def _info(self, d: Path) -> AvatarInfo | None:
        try:
            meta = json.loads((d / "meta.json").read_text())
            return AvatarInfo(
                avatar_id=meta["avatar_id"],
                source=meta["source"],
                n_frames=int(meta["n_frames"]),
                params=dict(meta["params"]),
                bbox_range=tuple(meta["bbox_range"]),
                created=meta["created"],
                size_bytes=_dir_size(d),
                mask_kind=meta["mask_kind"],
                has_latents=bool(meta["has_latents"]),
                fps=float(meta["fps"]),
                frame_size=tuple(meta["frame_size"]),
                source_digest=meta.get("extras", {}).get("source_digest"),
                name=str(meta.get("extras", {}).get("name") or meta["avatar_id"]),
                owner=meta.get("extras", {}).get("owner"),
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("skipping unreadable cache entry %s: %s", d, e)
            return None

    def list(self) -> list[AvatarInfo]:
        """Every cached avatar, oldest first."""
        if not self.avatars_dir.is_dir():
            return []
        infos = [
            self._info(d)
            for d in self.avatars_dir.iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / "meta.json").is_file()
        ]
        return sorted((i for i in infos if i is not None), key=lambda i: i.created)

    def info(self, avatar_id: str) -> AvatarInfo:
        d = self._avatar_path(avatar_id)
        info = self._info(d) if (d / "meta.json").is_file() else None
        if info is None:
            raise AvatarNotFoundError(f"no prepared avatar {avatar_id!r} in {self.avatars_dir}")
        return info

    def delete(self, avatar_id: str) -> None:
        """Remove a cached avatar (its detections stay, they serve other parameters)."""
        d = self._avatar_path(avatar_id)
        if not d.is_dir():
            raise AvatarNotFoundError(f"no prepared avatar {avatar_id!r} in {self.avatars_dir}")
        # Rename first so a reader never sees a half-deleted folder.
        trash = d.with_name(f".{d.name}.deleted-{os.getpid()}")
        os.replace(d, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # --- size limit -----------------------------------------------------------------------------
    @staticmethod
    def _touch(meta_path: Path) -> None:
        """Mark an avatar used now (its meta.json's mtime is the LRU clock)."""
        try:
            os.utime(meta_path)
        except OSError:
            pass  # a read-only cache still serves; it just cannot keep usage order

    def _last_used(self, avatar_id: str) -> float:
        try:
            return (self.avatars_dir / avatar_id / "meta.json").stat().st_mtime
        except OSError:
            return 0.0

    def total_bytes(self) -> int:
        return sum(i.size_bytes for i in self.list())

    def evict(self, max_bytes: int, keep: set[str] | frozenset[str] = frozenset()) -> list[str]:
        """Delete least recently used avatars until the avatars take at most `max_bytes`; returns the ids deleted.
        Avatars in `keep` and those of pinned sources stay, even if the cache cannot then fit."""
        infos = self.list()
        total = sum(i.size_bytes for i in infos)
        removable = []
        for info in infos:
            if info.avatar_id in keep:
                continue
            try:
                digest = json.loads((self.avatars_dir / info.avatar_id / "meta.json").read_text())
                digest = digest.get("extras", {}).get("source_digest")
            except (OSError, ValueError):
                continue
            if digest not in self._pinned:
                removable.append(info)
        removable.sort(key=lambda i: self._last_used(i.avatar_id))
        deleted = []
        for info in removable:
            if total <= max_bytes:
                break
            try:
                self.delete(info.avatar_id)
            except (OSError, AvatarNotFoundError):
                continue  # another process deleted it first
            total -= info.size_bytes
            deleted.append(info.avatar_id)
            log.info("cache over %.0f MB: evicted avatar %s (%s)", max_bytes / 1e6, info.avatar_id, info.source)
        return deleted
