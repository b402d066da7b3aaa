"""Which avatars and media a browser session may see, and where each avatar's source lives on disk.

The avatar cache on disk is shared by every session; what a session is shown is the samples' and the
bundled examples' avatars (`examples/` in the repository, always there, a Space included) plus the ones that
session prepared itself. The examples' and samples' avatars are pinned: the cache's size limit never evicts them. Uploads are copied out of Gradio's temporary folder
into `<cache_dir>/uploads/<content sha256>/` so an avatar can be prepared again with other parameters
(the bbox_shift grid) after Gradio has cleaned its temporary files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.avatars.model import Avatar
from workbench.avatars.store import AvatarInfo, AvatarNotFoundError, CacheError
from workbench.media import IMAGE_EXTS, VIDEO_EXTS
from workbench.ui.session_state import SessionState

if TYPE_CHECKING:
    from workbench.engine import Engine

log = logging.getLogger(__name__)

AUDIO_EXTS = frozenset({".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus", ".webm"})
REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "examples"  # media shipped with the repository (examples/README.md)
DEFAULT_EXAMPLE = "yongen.mp4"  # the avatar the app prepares on start and the chat shows first
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class AccessError(PermissionError):
    """The avatar exists but belongs to another session."""


def short_id(avatar_id: str) -> str:
    """Ids are <content hash>-<parameters hash>; avatars of one clip share the first part, so show both ends."""
    head, _, tail = avatar_id.partition("-")
    return f"{head[:6]}-{tail[:6]}" if tail else avatar_id[:12]


def find_samples_dir(configured: Path | None = None) -> Path | None:
    """Sample media: the `samples_dir` setting (WORKBENCH_SAMPLES_DIR), else `samples/` in the repository,
    else `../shared/samples` beside it, else the bundled `examples/`."""
    candidates = [Path(configured)] if configured else []
    candidates += [REPO_ROOT / "samples", REPO_ROOT.parent / "shared" / "samples", EXAMPLES_DIR]
    return next((c for c in candidates if c.is_dir()), None)


def safe_name(name: str) -> str:
    """A file name with nothing but letters, digits, dot, dash and underscore (never a path)."""
    base = _SAFE_NAME.sub("_", Path(name).name).strip("._") or "upload"
    return base[:120]


class Library:
    """Avatar visibility and source lookup for the UI. Thread-safe; shared by every session."""

    def __init__(
        self,
        engine: Engine,
        samples_dir: Path | None = None,
        show_all: bool = False,
        keep_loaded: int = 4,
        examples_dir: Path | None = EXAMPLES_DIR,
    ):
        self.engine = engine
        self.samples_dir = samples_dir
        self.examples_dir = examples_dir
        self.show_all = show_all  # single-user local use: show every cached avatar
        self.uploads_dir = Path(engine.settings.cache_dir) / "uploads"
        self._lock = threading.Lock()
        self._loaded: OrderedDict[str, Avatar] = OrderedDict()
        self._keep = keep_loaded
        self._sample_digests: dict[str, Path] | None = None

    # --- media --------------------------------------------------------------------------------
    def _samples(self, exts: frozenset[str]) -> list[Path]:
        """Media of these types in the samples folder, then the bundled examples not already there by name."""
        found: dict[str, Path] = {}
        for folder in (self.samples_dir, self.examples_dir):
            if folder is None or not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix.lower() in exts and p.name not in found:
                    found[p.name] = p
        return sorted(found.values(), key=lambda p: p.name)

    def default_example(self) -> Path | None:
        """The media file of the default example avatar (yongen.mp4), if this deployment has it."""
        try:
            return self.sample_path(DEFAULT_EXAMPLE)
        except FileNotFoundError:
            return None

    def sample_sources(self) -> list[Path]:
        """Sample videos and photos an avatar can be prepared from."""
        return self._samples(VIDEO_EXTS | IMAGE_EXTS)

    def sample_audio(self) -> list[Path]:
        """Sample speech clips to drive previews."""
        return self._samples(AUDIO_EXTS)

    def sample_path(self, name: str, audio: bool = False) -> Path:
        for p in self.sample_audio() if audio else self.sample_sources():
            if p.name == name:
                return p
        raise FileNotFoundError(f"no sample named {name!r}")

    def sample_digests(self) -> dict[str, Path]:
        if self._sample_digests is None:
            digests = {}
            for p in self.sample_sources():
                try:
                    digests[self.engine.cache.digest(p)] = p
                except OSError as e:
                    log.warning("cannot read sample %s: %s", p, e)
            self._sample_digests = digests
            pin = getattr(self.engine.cache, "pin_sources", None)
            if pin is not None:
                pin(digests)  # the cache's size limit never evicts an avatar every visitor sees
        return self._sample_digests

    def store_upload(self, path: str | Path) -> Path:
        """Copy an uploaded file to the uploads folder under its content hash; returns the kept copy."""
        src = Path(path)
        digest = self.engine.cache.digest(src)
        dest = self.uploads_dir / digest / safe_name(src.name)
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
        return dest

    def drop_upload(self, kept: Path) -> None:
        """Remove an upload copy no avatar was made from (a failed preparation), unless an avatar uses it."""
        digest = kept.parent.name
        try:
            if any(i.source_digest == digest for i in self.engine.list_avatars()):
                return
        except (OSError, CacheError):
            return
        shutil.rmtree(kept.parent, ignore_errors=True)

    # --- avatars ------------------------------------------------------------------------------
    def digest_of(self, avatar_id: str) -> str | None:
        # The store refuses anything that is not an avatar id (no paths).
        return self.engine.avatar_info(avatar_id).source_digest

    def is_sample(self, avatar_id: str) -> bool:
        return self.digest_of(avatar_id) in self.sample_digests()

    def visible(self, session_ids: list[str] | None) -> list[AvatarInfo]:
        """The avatars this session may see: the samples' and its own (newest first)."""
        own = set(session_ids or [])
        out = []
        for info in self.engine.list_avatars():
            if self.show_all or info.avatar_id in own or self._is_sample_quiet(info.avatar_id):
                out.append(info)
        return list(reversed(out))

    def _is_sample_quiet(self, avatar_id: str) -> bool:
        try:
            return self.is_sample(avatar_id)
        except AvatarNotFoundError:
            return False

    def check_access(self, avatar_id: str, session_ids: list[str] | None) -> None:
        if not avatar_id:
            raise AvatarNotFoundError("choose an avatar first (prepare one in the Avatar preparation tab)")
        if not self.engine.cache.has(avatar_id):
            raise AvatarNotFoundError(f"avatar {short_id(avatar_id)} is not in the cache (deleted?); prepare it again")
        if not (self.show_all or avatar_id in (session_ids or []) or self.is_sample(avatar_id)):
            raise AccessError("that avatar belongs to another session")

    def owner_of(self, avatar_id: str) -> str | None:
        """The browser session that created the avatar (recorded when it was prepared), or None."""
        return self.engine.avatar_info(avatar_id).owner

    def check_delete(self, avatar_id: str, session: SessionState | None) -> None:
        """Deleting is for the session that created the avatar; sample avatars are read-only for everyone.

        Preparing an avatar that is already cached (a sample, or another visitor's upload with the same file and
        settings) shows it to this session but does not make it this session's to delete.
        """
        self.check_access(avatar_id, session.avatars if session else None)
        if self.is_sample(avatar_id):
            raise AccessError("sample avatars are shared and read-only; they cannot be deleted here")
        if self.show_all:
            return  # single-user local use: every avatar is the user's
        token = session.token if session else None
        if not token or self.owner_of(avatar_id) != token:
            raise AccessError("only the session that prepared this avatar can delete it")

    def load(self, avatar_id: str) -> Avatar:
        """A cached avatar, kept in memory for the last few used (slider moves should not reload arrays)."""
        with self._lock:
            if avatar_id in self._loaded:
                self._loaded.move_to_end(avatar_id)
                return self._loaded[avatar_id]
        avatar = self.engine.load_avatar(avatar_id)
        with self._lock:
            self._loaded[avatar_id] = avatar
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
        return avatar

    def forget(self, avatar_id: str) -> None:
        with self._lock:
            self._loaded.pop(avatar_id, None)

    def source_path(self, avatar_id: str) -> Path:
        """The media file the avatar was prepared from (a sample or a kept upload)."""
        digest = self.digest_of(avatar_id)
        if digest is None:
            raise FileNotFoundError(f"avatar {short_id(avatar_id)} does not record its source; prepare it again")
        sample = self.sample_digests().get(digest)
        if sample is not None:
            return sample
        folder = self.uploads_dir / digest
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        files = [f for f in files if f.is_file() and not f.name.startswith(".")]
        if not files:
            raise FileNotFoundError(f"the source of avatar {short_id(avatar_id)} is no longer kept; upload it again")
        return files[0]
