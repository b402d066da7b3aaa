"""One browser session's state in the app (a `gr.State`): the avatars it may see, the one it works on, its token.

`gr.State(new_session)` calls `new_session` once per page load. Handlers never change a state in place: they
return a new one (`remember`, `forget`, `dataclasses.replace`), which Gradio stores for the next event.

Gradio hands each event the state as it was when that event started, and keeps whatever the event returns:
two events of one page that overlap can each undo the other. `SessionLocks` keeps the ones that must not
overlap apart (a visitor's preparation and the example avatar shown when the background warm-up ends).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


class SessionLocks:
    """One lock per browser session (by token), kept only while it is held or awaited: the table holds no
    more entries than there are handlers running, whatever number of pages a client opens."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, list[int]]] = {}  # token -> (lock, [users])

    @contextmanager
    def hold(self, token: str, wait: bool = True) -> Iterator[bool]:
        """Hold `token`'s lock for the block; with `wait=False` the block gets False at once when another
        handler of that session holds it (and must then leave the session alone)."""
        with self._mutex:
            lock, users = self._locks.setdefault(token, (threading.Lock(), [0]))
            users[0] += 1
        got = lock.acquire(blocking=wait)
        try:
            yield got
        finally:
            if got:
                lock.release()
            with self._mutex:
                users[0] -= 1
                if users[0] == 0:
                    del self._locks[token]

    def __len__(self) -> int:
        with self._mutex:
            return len(self._locks)
