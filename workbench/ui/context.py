"""What every tab shares: the engine, the avatar library, the per-session state and error handling.

A tab module builds its components inside the current `gr.Blocks` and wires them to handlers that are
plain functions of (context, inputs…), so the tests can call them without a browser.
"""

from __future__ import annotations

import functools
import html
import logging
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr

from workbench.avatars.pipeline import NoFaceError, PreparationError
from workbench.avatars.store import CacheError
from workbench.config import Settings
from workbench.media import MediaError
from workbench.ui.library import AccessError, Library, short_id  # noqa: F401  (re-exported for the tabs)
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
    # Scratch space for clips, report zips and unpacked manifests; removed when the process ends.
    scratch: tempfile.TemporaryDirectory = field(
        default_factory=lambda: tempfile.TemporaryDirectory(prefix="workbench-ui-")
    )

    def scratch_dir(self, prefix: str) -> Path:
        """A new folder under the scratch space."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.scratch.name))

    @property
    def runs_dir(self) -> Path:
        return Path(self.settings.runs_dir)


def new_session() -> dict:
    """Per-browser-session state: the avatars this session prepared, the one it works on, and a random token
    naming its private evaluation-runs folder. `gr.State(new_session)` calls this once per page load."""
    return {"avatars": [], "current": None, "token": secrets.token_hex(8)}


def remember(session: dict, avatar_id: str) -> dict:
    session = dict(session or new_session())
    avatars = [a for a in session.get("avatars", []) if a != avatar_id]
    session["avatars"] = avatars + [avatar_id]
    session["current"] = avatar_id
    return session


def forget(session: dict, avatar_id: str) -> dict:
    session = dict(session or new_session())
    session["avatars"] = [a for a in session.get("avatars", []) if a != avatar_id]
    if session.get("current") == avatar_id:
        session["current"] = None
    return session


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
            raise gr.Error(html.escape(str(e)), print_exception=False) from e
        except Exception as e:
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(html.escape(f"{type(e).__name__}: {e}"), print_exception=False) from e

    return wrapper


def avatar_label(info) -> str:
    """How an avatar appears in a dropdown: source, frames, the parameters that differ from the defaults."""
    from workbench.avatars.model import PrepParams

    defaults = PrepParams().to_dict()
    changed = [f"{k}={v}" for k, v in info.params.items() if defaults.get(k) != v and k != "max_frames"]
    extra = f", {', '.join(changed)}" if changed else ""
    return f"{info.source} · {info.n_frames} frames{extra} · {short_id(info.avatar_id)}"


def avatar_choices(ctx: UIContext, session: dict) -> list[tuple[str, str]]:
    return [(avatar_label(i), i.avatar_id) for i in ctx.library.visible(session.get("avatars"))]


def dropdown_update(ctx: UIContext, session: dict, value: str | None = None) -> dict:
    """A dropdown update listing the session's avatars with `value` (or the current one) selected."""
    choices = avatar_choices(ctx, session)
    ids = [c[1] for c in choices]
    want = value if value is not None else session.get("current")
    if want not in ids:
        preferred = ctx.preferred_avatar()
        want = preferred if preferred in ids else (ids[0] if ids else None)
    return gr.update(choices=choices, value=want)
