"""Where the server may open an outbound Realtime connection for a visitor.

A chat page may name its own Realtime base URL (Azure or another compatible endpoint). On a shared server that
would let any visitor make the server connect to an internal host:port and read back what answered there, so:
the configured endpoint (`WORKBENCH_OPENAI_BASE_URL`, else OpenAI's) is always allowed; other URLs only when the
operator lists them (`WORKBENCH_REALTIME_ALLOWED_BASE_URLS`) or accepts typed ones
(`WORKBENCH_REALTIME_VISITOR_BASE_URL`; by default only a private server, bound to loopback, does), and those never resolve to a loopback, private or link-local address
unless `WORKBENCH_REALTIME_ALLOW_PRIVATE` is set. A refusal says the same thing whatever is at the target.

Not covered: a name that resolves to a public address when checked and a private one when the SDK connects
(DNS rebinding); an operator who needs that closed lists only fixed endpoints.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from workbench.config import Settings, is_public

REFUSED = (
    "this server does not connect to that Realtime base URL (its operator allows only its configured endpoint"
    " and an allow-list)"
)
RESOLVE_TIMEOUT_S = 3.0


class EndpointRefused(ValueError):
    """A Realtime base URL the server will not connect to; the message never depends on the target."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def normalize(url: str | None) -> str | None:
    return url.strip().rstrip("/").lower() if url and url.strip() else None


@dataclass(frozen=True)
class EgressPolicy:
    configured: str | None  # None: OpenAI's default endpoint
    allowed: frozenset[str]
    visitor_urls: bool
    allow_private: bool

    @classmethod
    def from_settings(cls, s: Settings) -> EgressPolicy:
        listed = {normalize(u) for u in s.realtime_allowed_base_urls.split(",")}
        return cls(
            configured=normalize(s.openai_base_url),
            allowed=frozenset(u for u in listed if u),
            visitor_urls=s.realtime_visitor_base_url if s.realtime_visitor_base_url is not None else not is_public(s),
            allow_private=bool(s.realtime_allow_private),
        )

    def is_configured(self, url: str | None) -> bool:
        return normalize(url) == self.configured

    async def check(self, url: str | None) -> None:
        """Raise `EndpointRefused` unless the server may connect to `url` (None: the configured endpoint)."""
        if url is None or self.is_configured(url):
            return  # the operator's own endpoint
        if normalize(url) not in self.allowed and not self.visitor_urls:
            raise EndpointRefused()
        if not self.allow_private and not await public_host(url):
            raise EndpointRefused()


def _is_public_ip(addr: str) -> bool:
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


async def public_host(url: str) -> bool:
    """Whether every address `url`'s host resolves to is a public one (a name that does not resolve: False)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:
        return False
    if not host:
        return False
    try:
        return _is_public_ip(host)
    except ValueError:
        pass  # a name, not an address
    try:
        infos = await asyncio.wait_for(
            asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError):
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(_is_public_ip(a) for a in addrs)
