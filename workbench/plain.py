"""Error text a visitor sees: one plain line, no server paths, never longer than a few hundred characters.

Messages are built from exceptions, and exceptions carry what the input was (a 100 KB field, an SDP) and where
the server keeps things (`/tmp/gradio/…/x.mp4`, the cache folder). Both stay in the server's log.
"""

from __future__ import annotations

import re

MAX_MESSAGE = 300  # characters a visitor sees of one error
# An absolute POSIX path not inside a URL (no word, ':', '/' or '.' right before its first slash).
_ABS_PATH = re.compile(r"(?<![\w:/.~])(/[^\s'\"(),;:<>]+)")


def strip_paths(text: str) -> str:
    """Every absolute path in `text` replaced by its last part (the file's own name)."""

    def name(m: re.Match) -> str:
        parts = [p for p in m.group(1).split("/") if p]
        return parts[-1] if parts else "/"

    return _ABS_PATH.sub(name, text)


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    """`text` as one line without server paths, cut to `limit` characters."""
    s = strip_paths(" ".join(str(text).split()))
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"
