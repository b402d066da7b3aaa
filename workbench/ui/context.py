"""What every tab shares: the engine, the avatar library, the per-session state and error handling.

A tab module builds its components inside the current `gr.Blocks` and wires them to handlers that are
plain functions of (context, inputs…), so the tests can call them without a browser.
"""

from __future__ import annotations

import functools
import html
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from gradio.utils import get_upload_folder as gr_upload_folder

from workbench.avatars.model import PrepParams
from workbench.avatars.pipeline import NoFaceError, PreparationError
from workbench.avatars.store import CacheError
from workbench.config import Settings
from workbench.disk_budget import Area, DiskBudget, scratch_prefix
from workbench.media import MediaError
from workbench.plain import one_line
from workbench.ui.library import AccessError, Library, short_id  # noqa: F401  (re-exported for the tabs)
from workbench.ui.session_state import SessionLocks, SessionState
from workbench.weights import WeightsError

if TYPE_CHECKING:
    from workbench.engine import Engine
    from workbench.realtime.server import RealtimeManager

log = logging.getLogger(__name__)

# Errors whose message is written for a user: shown as they are. Anything else is a bug: logged in full,
# shown briefly.
USER_ERRORS: tuple[type[BaseException], ...] = (
    MediaError,
    NoFaceError,
    PreparationError,
    CacheError,
    AccessError,
    WeightsError,
    FileNotFoundError,
    ValueError,
)


@dataclass
class UIContext:
    engine: Engine
    library: Library
    settings: Settings
    extra_user_errors: tuple[type[BaseException], ...] = ()
    # workbench.realtime.server.RealtimeManager serving /rtc, which grants the chat page its avatar;
    # None when the Blocks are built without the realtime routes (build_ui alone).
    realtime: RealtimeManager | None = None
    # The avatar a session without a current one starts on (the default example once it is prepared).
    preferred_avatar: Callable[[], str | None] = lambda: None
    # Components several tabs refresh when the session's avatar list changes (filled by build_ui).
    avatar_dropdowns: list = field(default_factory=list)
    # Scratch space for clips, report zips and unpacked manifests; removed when the process ends, and by the
    # next start when the process was killed (its name carries the pid).
    scratch: tempfile.TemporaryDirectory = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix=scratch_prefix())
    )
    # Folders a handler may open a visitor's file from besides the samples: Gradio's upload folder. A file
    # path from anywhere else is refused, whatever the page sent (see `checked_input`).
    input_roots: list[Path] = field(default_factory=lambda: [Path(gr_upload_folder())])
    disk: DiskBudget | None = None  # set in __post_init__
    # Keeps a session's preparation and the example shown at warm-up's end from overwriting each other.
    session_locks: SessionLocks = field(default_factory=SessionLocks)
    # The weights panel's operator-token box (None until it is built), an input of the operator-only actions.
    operator_box: object | None = None

    def __post_init__(self) -> None:
        cache = Path(self.settings.cache_dir)
        self.disk = DiskBudget(
            int(self.settings.visitor_disk_mb) * 1024 * 1024,
            [
                Area(cache / "uploads"),
                Area(cache / "detections"),
                Area(Path(self.scratch.name)),
                Area(Path(self.settings.runs_dir) / "sessions", depth=2),
            ],
        )

    def scratch_dir(self, prefix: str) -> Path:
        """A new folder under the scratch space."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch.name))

    def checked_input(self, path: str | Path) -> Path:
        """A visitor's file, only from Gradio's upload folder or the app's own samples and examples; anything
        else is refused without saying whether it exists."""
        p = Path(path)
        roots = [*self.input_roots, self.library.samples_dir, self.library.examples_dir]
        try:
            resolved = p.resolve()
        except (OSError, RuntimeError):
            resolved = None
        for root in roots:
            if root is None or resolved is None:
                continue
            r = Path(root).resolve()
            if resolved == r or r in resolved.parents:
                return p
        raise AccessError("this file was not uploaded through this page; upload it, or pick a sample")

    def after_job(self) -> None:
        """Keep what visitors made within the disk budget (called when a job finishes, failed or not)."""
        try:
            self.disk.sweep()
        except OSError as e:  # a sweep never fails the visitor's job
            log.warning("disk budget sweep failed: %s", e)

    @property
    def runs_dir(self) -> Path:
        return Path(self.settings.runs_dir)


def gr_progress(progress: gr.Progress | None) -> Callable[[float, str], None] | None:
    """The engine's progress(fraction, message) as a Gradio progress bar."""
    if progress is None:
        return None

    def report(fraction: float, message: str = "") -> None:
        progress(max(0.0, min(1.0, float(fraction))), desc=message)

    return report


def user_errors(fn):
    """Turn the library's own exceptions into a `gr.Error` with their message; keep tracebacks out of the page.

    Gradio renders an error message as HTML, and messages can carry a user's file name: always escaped.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as e:
            log.info("%s refused: %s", fn.__name__, e)
            raise gr.Error(html.escape(one_line(e)), print_exception=False) from e
        except Exception as e:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(html.escape(one_line(f"{type(e).__name__}: {e}")), print_exception=False) from e

    return wrapper


def within_disk_budget(method):
    """A tab handler whose job writes files visitors can make (clips, runs, detections): after it, finished or
    failed, the visitors' disk budget is swept (`UIContext.after_job`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.ctx.after_job()

    return wrapper


def avatar_label(info) -> str:
    """How an avatar appears in a dropdown: source, frames, the parameters that differ from the defaults."""
    defaults = PrepParams().to_dict()
    changed = [f"{k}={v}" for k, v in info.params.items() if defaults.get(k) != v and k != "max_frames"]
    extra = f", {', '.join(changed)}" if changed else ""
    name = getattr(info, "name", "") or short_id(info.avatar_id)
    return f"{name} · {info.source} · {info.n_frames} frames{extra}"


def avatar_choices(ctx: UIContext, session: SessionState) -> list[tuple[str, str]]:
    return [(avatar_label(i), i.avatar_id) for i in ctx.library.visible(session.avatars)]


def dropdown_update(ctx: UIContext, session: SessionState, value: str | None = None) -> dict:
    """A dropdown update listing the session's avatars with `value` (or the current one) selected."""
    choices = avatar_choices(ctx, session)
    ids = [c[1] for c in choices]
    want = value if value is not None else session.current
    if want not in ids:
        preferred = ctx.preferred_avatar()
        want = preferred if preferred in ids else (ids[0] if ids else None)
    return gr.update(choices=choices, value=want)
