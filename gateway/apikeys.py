"""API keys: ``gk_`` and 43 random url-safe characters; only a sha256 hash and a short prefix are stored.

`KeyBook` holds the live keys in memory (hash -> Principal), so authentication never waits on
SQLite. Changes made through it update memory at once; changes made by another process (the CLI,
another worker) are picked up through the app's StoreChanges follower (gateway/changes.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets

from .principal import Principal
from .storage import KeyRecord, Store

log = logging.getLogger("chatkit_gateway.apikeys")

KEY_SHAPE = re.compile(r"gk_[A-Za-z0-9_-]{32,}")
PREFIX_LENGTH = 9  # "gk_" and 6 characters: enough to tell keys apart in a listing, useless to an attacker
BOOTSTRAP_NAME = "bootstrap-admin"


def new_key() -> str:
    return "gk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def visible_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


def principal_of(record: KeyRecord) -> Principal:
    return Principal(id=f"key:{record.name}", name=record.name, is_admin=record.is_admin, via="api_key")


class KeyBook:
    """The API keys in memory, kept in step with the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._live: dict[str, Principal] = {}  # hash -> principal, revoked keys excluded
        self._revoked: frozenset[str] = frozenset()  # hashes of revoked keys, to name the failure
        self._lock = asyncio.Lock()  # a reload never overwrites a change made meanwhile

    def principal_for(self, key: str) -> Principal | None:
        """The key's principal; no I/O, so it works while SQLite is locked or slow."""
        return self._live.get(hash_key(key))

    def is_revoked(self, key: str) -> bool:
        return hash_key(key) in self._revoked

    async def load(self) -> None:
        async with self._lock:
            records = await self.store.list_keys()
            self._live = {r.hash: principal_of(r) for r in records if r.revoked_at is None}
            self._revoked = frozenset(r.hash for r in records if r.revoked_at is not None)

    async def create(self, name: str, *, admin: bool, actor: str) -> str:
        """A new key named `name`, returned once in clear; raises storage.Conflict on a taken name."""
        key = new_key()
        prefix, key_hash = visible_prefix(key), hash_key(key)
        async with self._lock:
            await self.store.add_key(name, prefix, key_hash, admin)
            self._live = {**self._live, key_hash: principal_of(KeyRecord(name, prefix, key_hash, admin, 0.0, None))}
        await self.store.audit(actor, "key.create", f"key:{name}", after={"prefix": prefix, "admin": admin})
        return key

    async def revoke(self, name_or_prefix: str, *, actor: str) -> int:
        """Revoke every live key with this name or prefix; the number revoked."""
        revoked = await self.store.revoke_key(name_or_prefix)
        if revoked:
            await self.store.audit(actor, "key.revoke", f"key:{name_or_prefix}")
        await self.load()
        return revoked

    async def ensure(self, name: str, key: str, *, admin: bool, actor: str) -> bool:
        """Make `name` hold exactly `key` (the bootstrap admin key); True when something changed."""
        key_hash = hash_key(key)
        current = {r.name: r for r in await self.store.list_keys()}.get(name)
        if current and current.hash == key_hash and current.is_admin == admin and current.revoked_at is None:
            return False
        await self.store.replace_key(name, visible_prefix(key), key_hash, admin)
        await self.store.audit(actor, "key.replace" if current else "key.create", f"key:{name}",
                               after={"prefix": visible_prefix(key), "admin": admin})
        await self.load()
        return True
