"""Secrets never reach a log: a logging filter that redacts API keys, Authorization headers and URL credentials."""

from __future__ import annotations

import logging
import re
from collections import Counter

_AUTH_PATTERNS = [
    re.compile(r"(?i)(authorization|api-key|openai-api-key)(\s*[:=]\s*)(\S.*)"),
    re.compile(r"(?i)(bearer\s+)(\S+)"),
    re.compile(r"\b(sk-[A-Za-z0-9_\-]{6,})"),
]


# Credentials inside a URL: user:password@ and secret-looking query parameters (Azure's api-key=, SAS sig=).
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@]+@")
_URL_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:api[-_]?key|key|token|access_token|auth|sig|signature|password|secret)=)[^&#\s]+"
)


def redact_url(text: str) -> str:
    """`text` with every URL's credentials replaced by [redacted] (what logs, latency logs and the page show)."""
    return _URL_SECRET_QUERY.sub(r"\1[redacted]", _URL_USERINFO.sub(r"\1[redacted]@", text))


class RedactingFilter(logging.Filter):
    """Rewrites a record so no credential appears: known secrets, Authorization headers, sk- keys."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self._held: Counter[str] = Counter(s for s in (secrets or []) if s)

    @property
    def secrets(self) -> list[str]:
        return list(self._held)

    def hold(self, secret: str) -> None:
        """Redact `secret` until as many `release` calls as `hold` calls were made for it."""
        if secret:
            self._held[secret] += 1

    def release(self, secret: str) -> None:
        self._held[secret] -= 1
        if self._held[secret] <= 0:
            del self._held[secret]

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "[redacted]")
        text = _AUTH_PATTERNS[0].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
        text = _AUTH_PATTERNS[1].sub(lambda m: f"{m.group(1)}[redacted]", text)
        return redact_url(_AUTH_PATTERNS[2].sub("[redacted]", text))

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: drop its arguments rather than risk leaking them
            message = str(record.msg)
        clean = self.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        return True


def redacting_logger(name: str) -> tuple[logging.Logger, RedactingFilter]:
    """A logger whose records are redacted before any handler (ours or a test's) sees them.

    `hold` the secrets in use on the returned filter (and `release` them when done); header and
    `sk-…` patterns are redacted whatever is held.
    """
    logger = logging.getLogger(name)
    for f in logger.filters:
        if isinstance(f, RedactingFilter):
            return logger, f
    f = RedactingFilter()
    logger.addFilter(f)
    return logger, f
