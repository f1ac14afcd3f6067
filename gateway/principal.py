"""Principal: who is calling, as auth established it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    id: str  # stable and unique: "key:<name>", "user:<forwarded user>", "jwt:<sub>"
    name: str  # for display only
    is_admin: bool = False
    groups: tuple[str, ...] = ()
    via: str = "api_key"  # api_key | trusted_headers | jwt | client_secret
