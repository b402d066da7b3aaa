"""One browser session's state in the app (a `gr.State`): the avatars it may see, the one it works on, its token.

`gr.State(new_session)` calls `new_session` once per page load. Handlers never change a state in place: they
return a new one (`remember`, `forget`, `dataclasses.replace`), which Gradio stores for the next event.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace


@dataclass
class SessionState:
    avatars: list[str] = field(default_factory=list)  # the avatars this session prepared or opened, oldest first
    current: str | None = None  # the avatar the tabs work on
    # Names this session's private evaluation-runs folder and owns the avatars it uploads (never shown).
    token: str = field(default_factory=lambda: secrets.token_hex(8))


def new_session() -> SessionState:
    return SessionState()


def remember(session: SessionState | None, avatar_id: str) -> SessionState:
    """`session` with `avatar_id` visible and current."""
    session = session or new_session()
    avatars = [a for a in session.avatars if a != avatar_id] + [avatar_id]
    return replace(session, avatars=avatars, current=avatar_id)


def forget(session: SessionState | None, avatar_id: str) -> SessionState:
    """`session` without `avatar_id` (no current avatar if it was the current one)."""
    session = session or new_session()
    current = None if session.current == avatar_id else session.current
    return replace(session, avatars=[a for a in session.avatars if a != avatar_id], current=current)
