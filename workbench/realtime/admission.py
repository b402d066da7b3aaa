"""Who gets a chat slot and who may open the chat page: the waiting line and the capability grants.

The waiting line is first come, first served among callers who are still there: the page retries every
`RETRY_AFTER_S` seconds; a free slot goes to the first caller who asks for it with nobody ahead who is still
asking (asked within `ACTIVE_S`), and a place not asked about for `keep_s` (a few seconds) is gone, so an
abandoned tab cannot hold a free slot for the callers behind it. One client address holds at most `per_client` places, so
page loads (which are free) cannot fill the line.

Grants are the chat page's tokens (see workbench.realtime.server). One browser session keeps at most
`per_session` of them (its oldest go first), and when the book is full the oldest grant of the client with
the most grants goes, so one visitor cannot push everyone else's chat links out.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.responses import JSONResponse

RETRY_AFTER_S = 3  # what a busy answer tells the page to wait before trying again
ACTIVE_S = RETRY_AFTER_S + 2.0  # a waiting caller who asked this recently is still there
GRANT_TTL_S = 12 * 3600.0  # a chat tab left open for a working day still connects
MAX_GRANTS = 4096  # every avatar choice in the app makes one; the oldest go first
GRANT_REFUSED = "this chat link is unknown or has expired: choose the avatar again in the workbench's Realtime chat tab"


class Busy(Exception):
    """Every call slot is taken: the caller waits in line (`ahead` callers before it) and tries again."""

    def __init__(self, max_sessions: int, ahead: int, ticket: str):
        self.ahead = ahead
        self.ticket = ticket
        who = "nobody" if ahead == 0 else f"{ahead} caller{'s' if ahead != 1 else ''}"
        super().__init__(
            f"all {max_sessions} realtime calls are busy; {who} ahead of you. "
            f"Your place is kept while the page keeps trying (every {RETRY_AFTER_S} s)."
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"detail": str(self), "queue_position": self.ahead, "ticket": self.ticket, "retry_after_s": RETRY_AFTER_S},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )


class LineFull(Exception):
    """This client already holds as many places in the waiting line as one client may."""

    def __init__(self, per_client: int):
        super().__init__(f"this address already waits for {per_client} chat slots; close a chat tab or wait for a slot")

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": str(self)}, status_code=429, headers={"Retry-After": str(RETRY_AFTER_S)})


@dataclass
class _Place:
    seen: float  # when the caller last asked (monotonic)
    client: str | None


class WaitingLine:
    """Callers refused for want of a slot, in arrival order. Not thread-safe: used under the manager's lock."""

    def __init__(self, keep_s: float, per_client: int):
        self.keep_s = float(keep_s)
        self.per_client = int(per_client)
        self._line: OrderedDict[str, _Place] = OrderedDict()

    def __len__(self) -> int:
        return len(self._line)

    def _prune(self, now: float) -> None:
        for key, place in list(self._line.items()):
            if now - place.seen > self.keep_s:
                del self._line[key]  # gave up (tab closed, page stopped trying): its place goes

    def admit(self, holder: str | None, client: str | None, free: int, max_sessions: int) -> str | None:
        """Take a free slot for `holder` (returned) or raise `Busy` with its place, or `LineFull`."""
        now = time.monotonic()
        self._prune(now)
        places = list(self._line.items())
        ahead = [k for k, _ in places].index(holder) if holder in self._line else len(places)
        # Only callers still asking (within one retry and some slack) hold a free slot back: one who stopped
        # keeps its place for `keep_s` in case it returns, but does not keep a slot empty meanwhile.
        asking = sum(1 for _, p in places[:ahead] if now - p.seen <= ACTIVE_S)
        if asking < free:
            self._line.pop(holder, None)
            return holder
        if holder not in self._line:
            if client is not None and sum(p.client == client for p in self._line.values()) >= self.per_client:
                raise LineFull(self.per_client)
            if holder is None:
                holder = f"ticket:{secrets.token_urlsafe(12)}"
        self._line[holder] = _Place(now, client)
        ahead = list(self._line).index(holder)
        raise Busy(max_sessions, ahead, holder.split(":", 1)[1] if holder.startswith("ticket:") else "")


@dataclass(frozen=True)
class Grant:
    avatar_id: str
    holder: str | None
    expires: float  # monotonic
    client: str | None


class GrantBook:
    """token -> Grant, oldest first. Granted from Gradio's worker threads, read on the event loop: a lock."""

    def __init__(self, ttl_s: float, max_grants: int, per_session: int):
        self.ttl_s = float(ttl_s)
        self.max_grants = int(max_grants)
        self.per_session = int(per_session)
        self.entries: OrderedDict[str, Grant] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, avatar_id: str, holder: str | None = None, client: str | None = None) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            # Insertion order is expiry order (one TTL): the expired are at the front.
            while self.entries and next(iter(self.entries.values())).expires <= now:
                self.entries.popitem(last=False)
            if holder is not None:
                mine = [t for t, g in self.entries.items() if g.holder == holder]
                for t in mine[: max(0, len(mine) - self.per_session + 1)]:
                    del self.entries[t]
            self.entries[token] = Grant(avatar_id, holder, now + self.ttl_s, client)
            while len(self.entries) > self.max_grants:
                # The client holding the most grants loses its oldest: one visitor pushes out only its own.
                counts = Counter(g.client for g in self.entries.values())
                biggest = max(counts.values())
                victim = next(t for t, g in self.entries.items() if counts[g.client] == biggest)
                del self.entries[victim]
        return token

    def get(self, token: str) -> Grant | None:
        with self._lock:
            grant = self.entries.get(token)
            if grant is None:
                return None
            if grant.expires <= time.monotonic():
                del self.entries[token]
                return None
            return grant

    def holder(self, grant: str | None, ticket: str | None) -> str | None:
        """Who is calling: the browser session `grant` was made for, else the caller's waiting-line ticket."""
        entry = self.get(grant) if grant else None
        if entry is not None and entry.holder:
            return f"grant:{entry.holder}"
        return f"ticket:{ticket}" if ticket else None

    def avatar_for(self, grant: str | None, avatar_id: str | None, open_avatars: bool) -> str | None:
        """The avatar an offer may open: its grant's, or with `open_avatars` any id (None: the first); else 403."""
        if grant is not None:
            entry = self.get(grant)
            if entry is None:
                raise HTTPException(403, GRANT_REFUSED)
            if avatar_id is not None and avatar_id != entry.avatar_id:
                raise HTTPException(403, "this chat link is for another avatar")
            return entry.avatar_id
        if not open_avatars:
            raise HTTPException(
                403, "open the chat from the workbench's Realtime chat tab (this server needs a chat link)"
            )
        return avatar_id
