"""Trusted proxies: whose X-Forwarded-* headers count, and who the real client is."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache


class TrustedProxies:
    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
        self.trusts = lru_cache(maxsize=4096)(self._trusts)

    def _trusts(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        """The peer, or, behind trusted proxies, the rightmost X-Forwarded-For hop we do not trust."""
        peer = peer or "unknown"
        if not forwarded_for or not self.trusts(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")):
            hop = hop.strip()
            if not self.trusts(hop):
                return hop if _is_ip(hop) else client
            client = hop
        return client


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
