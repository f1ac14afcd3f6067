"""Store: every SQL statement the gateway runs, behind one small interface (SQLite via aiosqlite).

WAL mode, a busy timeout, and forward-only migrations numbered by `PRAGMA user_version`.
Callers keep what they need in memory; the writes of the request hot path (issued sessions) go in
batches through `write_batch`, one transaction and one thread hop each.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

# Each entry moves the schema one version forward; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE workflows (
        id INTEGER PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        data TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        principal TEXT NOT NULL,
        slug TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'active'
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        object TEXT NOT NULL,
        before TEXT,
        after TEXT
    );
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE telephony_routes (
        id INTEGER PRIMARY KEY,
        number TEXT NOT NULL UNIQUE,
        slug TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    """
    CREATE TABLE webhook_deliveries (
        webhook_id TEXT PRIMARY KEY,
        at REAL NOT NULL
    );
    CREATE INDEX webhook_deliveries_at ON webhook_deliveries (at);
    """,
    """
    ALTER TABLE webhook_deliveries ADD COLUMN state TEXT NOT NULL DEFAULT 'done';
    """,
    # Issued sessions keyed by secret hash alone: every relayed or minted session is a row, and an index
    # on a random key costs ~10 µs of CPU per row (a B-tree page rewritten into the WAL), where one on
    # expires_at (rows arrive in time order) costs ~1. Cancels are written by secret hash; the cancelled
    # sessions other workers poll for have a partial index, which an insert (status 'active') never touches.
    # Expired rows, which the purge would drop anyway, are not carried over.
    """
    CREATE TABLE sessions_by_hash (
        id TEXT NOT NULL,
        principal TEXT NOT NULL,
        slug TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'active'
    );
    INSERT INTO sessions_by_hash SELECT id, principal, slug, secret_hash, created_at, expires_at, status FROM sessions
        WHERE expires_at > CAST(strftime('%s', 'now') AS REAL);
    DROP TABLE sessions;
    ALTER TABLE sessions_by_hash RENAME TO sessions;
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    CREATE INDEX sessions_cancelled ON sessions (expires_at) WHERE status = 'cancelled';
    """,
)


class Conflict(Exception):
    """A unique value (slug, key name, number) already exists."""


class Write(NamedTuple):
    """One statement for `Store.write_batch`, built by the functions at the end of this module."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True)
class KeyRecord:
    name: str
    prefix: str
    hash: str
    is_admin: bool
    created_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class WorkflowRecord:
    slug: str
    data: dict[str, Any]  # every field of the entry but its slug, as the registry validates them
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class SessionRecord:
    id: str
    principal: str
    slug: str | None  # None for a session minted through the relay for a workflow no slug names
    secret_hash: str
    created_at: float
    expires_at: float
    status: str = "active"  # active | cancelled


@dataclass(frozen=True)
class CallRouteRecord:
    number: str  # a number, or a prefix ending in "*"
    slug: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: float
    actor: str
    action: str
    object: str
    before: Any
    after: Any


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        assert self._db is not None, "Store used before open()"
        return self._db

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        await self._db.execute("PRAGMA busy_timeout = 5000")
        await self._db.execute("PRAGMA journal_mode = WAL")
        await self._db.execute("PRAGMA synchronous = NORMAL")
        await self.migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def migrate(self) -> None:
        (version,) = await self._one("PRAGMA user_version")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.db.executescript(f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def data_version(self) -> int:
        """Changes when another connection (a CLI, another worker) commits: a cheap change probe."""
        (version,) = await self._one("PRAGMA data_version")
        return int(version)

    async def _one(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
        async with self.db.execute(sql, tuple(params)) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        async with self.db.execute(sql, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run one statement; a UNIQUE violation becomes Conflict. Returns the rows changed."""
        try:
            async with self.db.execute(sql, tuple(params)) as cursor:
                return cursor.rowcount
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from None

    async def write_batch(self, writes: Sequence[Write]) -> list[Exception | None]:
        """Run `writes` in order in one transaction; each one's outcome, None when it landed.

        A write that cannot land (a constraint) is retried alone with each of the others, so it fails
        only itself; a failure of the database itself (locked, full, I/O) raises, for the whole batch.
        """
        # aiosqlite's `_execute` runs a function on the connection's own thread: one hop for the whole
        # batch, and no other statement of this connection can land inside its transaction.
        outcomes: list[Exception | None] = await self.db._execute(_apply_batch, self.db._conn, writes)
        return [Conflict(str(o)) if isinstance(o, sqlite3.IntegrityError) else o for o in outcomes]

    # API keys -----------------------------------------------------------------------------

    async def add_key(self, name: str, prefix: str, key_hash: str, is_admin: bool) -> None:
        await self._write("INSERT INTO api_keys (name, prefix, hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?)",
                          (name, prefix, key_hash, int(is_admin), time.time()))

    async def replace_key(self, name: str, prefix: str, key_hash: str, is_admin: bool) -> None:
        """Create `name`, or give it a new secret and role (the bootstrap admin key)."""
        await self._write(
            "INSERT INTO api_keys (name, prefix, hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET prefix = excluded.prefix, hash = excluded.hash, "
            "is_admin = excluded.is_admin, revoked_at = NULL",
            (name, prefix, key_hash, int(is_admin), time.time()))

    async def list_keys(self) -> list[KeyRecord]:
        rows = await self._all("SELECT name, prefix, hash, is_admin, created_at, revoked_at FROM api_keys ORDER BY id")
        return [KeyRecord(r["name"], r["prefix"], r["hash"], bool(r["is_admin"]), r["created_at"], r["revoked_at"])
                for r in rows]

    async def revoke_key(self, name_or_prefix: str) -> int:
        return await self._write("UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND (name = ? OR prefix = ?)",
                                 (time.time(), name_or_prefix, name_or_prefix))

    # Key-value settings (the Start workflow) -------------------------------------------------

    async def get_value(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else row["value"]

    async def setdefault_value(self, key: str, value: str) -> str:
        """`key`'s value, storing `value` first if it has none (the first of two racing writers wins)."""
        await self._write("INSERT OR IGNORE INTO kv (key, value) VALUES (?, ?)", (key, value))
        stored = await self.get_value(key)
        assert stored is not None
        return stored

    async def set_value(self, key: str, value: str | None) -> None:
        if value is None:
            await self._write("DELETE FROM kv WHERE key = ?", (key,))
        else:
            await self._write("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                              (key, value))

    # Managed workflows --------------------------------------------------------------------

    async def list_workflows(self) -> list[WorkflowRecord]:
        rows = await self._all("SELECT slug, data, created_at, updated_at FROM workflows ORDER BY created_at, id")
        return [WorkflowRecord(r["slug"], json.loads(r["data"]), r["created_at"], r["updated_at"]) for r in rows]

    async def add_workflow(self, slug: str, data: dict[str, Any]) -> WorkflowRecord:
        """Insert a new slug; an existing one raises Conflict (so concurrent creates cannot both win)."""
        now = time.time()
        await self._write("INSERT INTO workflows (slug, data, created_at, updated_at) VALUES (?, ?, ?, ?)",
                          (slug, _json(data), now, now))
        return WorkflowRecord(slug, data, now, now)

    async def update_workflow(self, slug: str, data: dict[str, Any]) -> bool:
        changed = await self._write("UPDATE workflows SET data = ?, updated_at = ? WHERE slug = ?",
                                    (_json(data), time.time(), slug))
        return changed > 0

    async def delete_workflow(self, slug: str) -> bool:
        return await self._write("DELETE FROM workflows WHERE slug = ?", (slug,)) > 0

    # Issued ChatKit sessions ---------------------------------------------------------------

    async def live_sessions(self, now: float) -> list[SessionRecord]:
        """Sessions that have not expired yet, cancelled ones included."""
        rows = await self._all("SELECT * FROM sessions WHERE expires_at > ? ORDER BY created_at", (now,))
        return [session_record(r) for r in rows]

    async def cancelled_sessions(self, now: float) -> list[SessionRecord]:
        rows = await self._all("SELECT * FROM sessions WHERE status = 'cancelled' AND expires_at > ?", (now,))
        return [session_record(r) for r in rows]

    async def session_by_hash(self, digest: str) -> SessionRecord | None:
        row = await self._one("SELECT * FROM sessions WHERE secret_hash = ?", (digest,))
        return None if row is None else session_record(row)

    # Telephony routes and webhook deliveries -------------------------------------------------

    async def list_call_routes(self) -> list[CallRouteRecord]:
        rows = await self._all("SELECT number, slug, created_at, updated_at FROM telephony_routes ORDER BY created_at, id")
        return [CallRouteRecord(r["number"], r["slug"], r["created_at"], r["updated_at"]) for r in rows]

    async def add_call_route(self, number: str, slug: str) -> CallRouteRecord:
        """Insert a new number; an existing one raises Conflict."""
        now = time.time()
        await self._write("INSERT INTO telephony_routes (number, slug, created_at, updated_at) VALUES (?, ?, ?, ?)",
                          (number, slug, now, now))
        return CallRouteRecord(number, slug, now, now)

    async def update_call_route(self, number: str, slug: str) -> bool:
        return await self._write("UPDATE telephony_routes SET slug = ?, updated_at = ? WHERE number = ?",
                                 (slug, time.time(), number)) > 0

    async def delete_call_route(self, number: str) -> bool:
        return await self._write("DELETE FROM telephony_routes WHERE number = ?", (number,)) > 0

    async def claim_delivery(self, webhook_id: str, now: float, *, since: float, stale_before: float) -> str:
        """Take `webhook_id` to act on it: "claimed"; or "done" (acted on since `since`), or "busy" (another
        process is acting on it, its claim newer than `stale_before`). One statement, so one process wins."""
        claimed = await self._write(
            "INSERT INTO webhook_deliveries (webhook_id, at, state) VALUES (?, ?, 'acting') "
            "ON CONFLICT(webhook_id) DO UPDATE SET at = excluded.at, state = 'acting' "
            "WHERE (state = 'acting' AND at < ?) OR (state = 'done' AND at < ?)",
            (webhook_id, now, stale_before, since))
        if claimed:
            return "claimed"
        row = await self._one("SELECT state FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
        return "busy" if row is not None and row["state"] == "acting" else "done"

    async def release_delivery(self, webhook_id: str) -> None:
        """Give up a claim whose action failed, so the sender's retry can act."""
        await self._write("DELETE FROM webhook_deliveries WHERE webhook_id = ? AND state = 'acting'", (webhook_id,))

    async def record_delivery(self, webhook_id: str, at: float) -> None:
        await self._write("INSERT OR REPLACE INTO webhook_deliveries (webhook_id, at, state) VALUES (?, ?, 'done')",
                          (webhook_id, at))

    async def purge_deliveries(self, before: float) -> int:
        return await self._write("DELETE FROM webhook_deliveries WHERE at < ?", (before,))

    # Audit ---------------------------------------------------------------------------------

    async def audit(self, actor: str, action: str, obj: str, before: Any = None, after: Any = None) -> None:
        await self._write(*audit_entry(actor, action, obj, before, after))

    async def list_audit(self, *, actor: str | None = None, obj: str | None = None, limit: int = 200) -> list[AuditRecord]:
        clauses, params = [], []
        if actor:
            clauses.append("actor = ?")
            params.append(actor)
        if obj:
            clauses.append("object = ?")
            params.append(obj)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._all(f"SELECT * FROM audit {where} ORDER BY id DESC LIMIT ?", (*params, limit))
        return [AuditRecord(r["id"], r["at"], r["actor"], r["action"], r["object"],
                            _unjson(r["before"]), _unjson(r["after"])) for r in rows]


# Writes that can go in a batch ---------------------------------------------------------------

def session_insert(record: SessionRecord) -> Write:
    return Write("INSERT OR REPLACE INTO sessions (id, principal, slug, secret_hash, created_at, expires_at, status) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (record.id, record.principal, record.slug or "", record.secret_hash, record.created_at,
                  record.expires_at, record.status))


def session_status(digest: str, status: str) -> Write:
    return Write("UPDATE sessions SET status = ? WHERE secret_hash = ?", (status, digest))


def sessions_purge(now: float) -> Write:
    return Write("DELETE FROM sessions WHERE expires_at <= ?", (now,))


def audit_entry(actor: str, action: str, obj: str, before: Any = None, after: Any = None) -> Write:
    return Write("INSERT INTO audit (at, actor, action, object, before, after) VALUES (?, ?, ?, ?, ?, ?)",
                 (time.time(), actor, action, obj, _json(before), _json(after)))


def _apply_batch(db: sqlite3.Connection, writes: Sequence[Write]) -> list[Exception | None]:
    """On the connection's thread: `writes` in one transaction, else each alone (see `write_batch`)."""
    try:
        _apply(db, writes)
        return [None] * len(writes)
    except sqlite3.OperationalError:
        raise  # locked, full, I/O: every write would fail the same way, and retrying each would take long
    except Exception as exc:
        if len(writes) == 1:
            return [exc]
    outcomes: list[Exception | None] = []
    for write in writes:
        try:
            _apply(db, (write,))
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _apply(db: sqlite3.Connection, writes: Sequence[Write]) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            db.execute(write.sql, write.params)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def session_record(row: sqlite3.Row) -> SessionRecord:
    return SessionRecord(row["id"], row["principal"], row["slug"] or None, row["secret_hash"], row["created_at"],
                         row["expires_at"], row["status"])


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, default=str)


def _unjson(value: str | None) -> Any:
    return None if value is None else json.loads(value)

