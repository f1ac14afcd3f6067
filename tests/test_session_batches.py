"""Session writes are group-committed behind the answers: one transaction per batch, nothing waiting for it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from gateway.sessions import SessionBook, secret_hash
from gateway.settings import SessionsSettings
from gateway.storage import MIGRATIONS, Conflict, SessionRecord, Store, session_insert

T = TypeVar("T")


@dataclass
class Opened:
    path: Path
    store: Store
    book: SessionBook
    other: Store  # a second connection on the same file, as another worker has


@pytest.fixture
async def opened(tmp_path: Path) -> AsyncIterator[Opened]:
    path = tmp_path / "gateway.db"
    store, other = Store(str(path)), Store(str(path))
    await store.open()
    await other.open()
    book = SessionBook(store, SessionsSettings())
    await book.open()
    yield Opened(path, store, book, other)
    await book.close()  # again after a test's own close: a no-op
    await other.close()
    await store.close()


def record(n: int, principal: str | None = "key:alice") -> SessionRecord:
    now = time.time()
    return SessionRecord(f"cksess_{n}", principal, "support", secret_hash(f"ek_secret_{n}"), now,  # type: ignore[arg-type]
                         now + 600)


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection: read without yielding to the event loop, so nothing is written meanwhile."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


async def within(awaitable: Awaitable[T]) -> T:
    """A writer that died would leave its waiters hanging: fail instead."""
    return await asyncio.wait_for(awaitable, 10)


async def traced(store: Store) -> list[str]:
    statements: list[str] = []
    await store.db.set_trace_callback(statements.append)
    return statements


async def test_sessions_issued_together_share_few_transactions_and_every_row_lands(opened):
    statements = await traced(opened.store)
    records = [record(n) for n in range(200)]
    for r in records:
        opened.book.issue(r)
    await within(opened.book.flush())
    inserts = [s for s in statements if s.startswith("INSERT OR REPLACE INTO sessions")]
    transactions = [s for s in statements if s == "BEGIN IMMEDIATE"]
    assert len(inserts) == 200
    assert 1 <= len(transactions) <= 200 / 20, len(transactions)
    in_transaction, autocommitted = False, 0
    for statement in statements:
        in_transaction = statement == "BEGIN IMMEDIATE" or (in_transaction and statement != "COMMIT")
        autocommitted += statement.startswith("INSERT") and not in_transaction
    assert autocommitted == 0
    stored = await opened.other.live_sessions(0)
    assert sorted(r.id for r in stored) == sorted(r.id for r in records)


async def test_issue_does_not_wait_for_the_store(opened):
    """The secret leaves at once: its row is written behind, not before issue() returns."""
    r = record(1)
    opened.book.issue(r)
    with raw(opened.path) as db:  # synchronous: the writer cannot run between issue() and this look
        assert db.execute("SELECT 1 FROM sessions WHERE secret_hash = ?", (r.secret_hash,)).fetchone() is None
    assert opened.book.active("ek_secret_1") is not None
    await within(opened.book.flush())
    with raw(opened.path) as db:
        assert db.execute("SELECT 1 FROM sessions WHERE secret_hash = ?", (r.secret_hash,)).fetchone() is not None


async def test_another_worker_honours_a_secret_whose_record_is_still_being_written(opened):
    """A second book on the same file (another worker) checks a secret issued a moment ago: it waits for the row."""
    other_book = SessionBook(opened.other, SessionsSettings())
    await other_book.open()
    try:
        opened.book.issue(record(7))
        found = await within(other_book.check("ek_secret_7"))
        assert found is not None and (found.id, found.principal, found.status) == ("cksess_7", "key:alice", "active")
        started = time.monotonic()
        assert await within(other_book.check("ek_never_issued")) is None  # refused once the looks are over
        assert time.monotonic() - started >= 0.3
    finally:
        await other_book.close()


async def test_an_insert_then_a_cancel_of_one_session_land_in_that_order(opened):
    r = record(1)
    opened.book.issue(r)
    assert opened.book.cancel(r.id) is not None  # queued behind the insert, in one batch or the next
    await within(opened.book.flush())
    [stored] = await opened.other.live_sessions(0)
    assert stored.status == "cancelled"


async def test_a_bad_write_fails_alone_and_is_logged_without_its_values(opened, caplog):
    good, bad = [record(n) for n in range(10)], record(99, principal=None)  # NOT NULL principal
    for r in [*good[:5], bad, *good[5:]]:
        opened.book.issue(r)
    await within(opened.book.flush())
    assert sorted(r.id for r in await opened.other.live_sessions(0)) == sorted(r.id for r in good)
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert "NOT NULL constraint failed" in logged and bad.secret_hash not in logged


async def test_a_failing_batch_is_logged_and_the_next_batch_still_works(opened, caplog):
    await opened.store.db.execute("PRAGMA busy_timeout = 50")
    with raw(opened.path) as locker:
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the busy timeout
        for n in range(5):
            opened.book.issue(record(n))
        opened.book.cancel(record(0).id)
        await within(opened.book.flush())
        locker.execute("ROLLBACK")
    assert "session writes failed together" in caplog.text and "locked" in caplog.text
    assert not any(record(n).secret_hash in caplog.text for n in range(5))
    for n in range(5, 10):
        opened.book.issue(record(n))
    await within(opened.book.flush())
    assert sorted(r.id for r in await opened.other.live_sessions(0)) == [f"cksess_{n}" for n in range(5, 10)]
    assert opened.book.active("ek_secret_0") is None  # cancelled in memory though its row never landed
    assert opened.book.active("ek_secret_1") is not None  # the failed rows stay valid here


async def test_close_writes_everything_still_queued(opened):
    records = [record(n) for n in range(20)]
    for r in records:
        opened.book.issue(r)
        opened.book.cancel(r.id)
        opened.book.audit("key:admin", "session.cancel", f"session:{r.id}", None, {"status": "cancelled"})
    await opened.book.close()
    assert {r.status for r in await opened.other.live_sessions(0)} == {"cancelled"}
    assert len(await opened.other.list_audit(actor="key:admin")) == 20


async def test_write_batch_lands_every_good_write_around_a_bad_one(opened):
    writes = [session_insert(record(1)), session_insert(record(2, principal=None)), session_insert(record(3))]
    outcomes = await opened.store.write_batch(writes)
    assert outcomes[0] is None and isinstance(outcomes[1], Conflict) and outcomes[2] is None
    assert sorted(r.id for r in await opened.other.live_sessions(0)) == ["cksess_1", "cksess_3"]


async def test_a_store_from_before_sessions_were_keyed_by_secret_hash_keeps_them(tmp_path):
    """The migration that rebuilt the sessions table (version 3 -> 4) carries every live row over."""
    path = tmp_path / "gateway.db"
    expired = dataclasses.replace(record(3), expires_at=time.time() - 1)
    with raw(path) as db:
        for number, script in enumerate(MIGRATIONS[:3], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        for kept in (record(1), record(2), expired):
            db.execute(*session_insert(kept))
    store = Store(str(path))
    await store.open()
    book = SessionBook(store, SessionsSettings())
    await book.open()
    try:
        assert book.active("ek_secret_1").id == "cksess_1"
        book.cancel("cksess_2")
        await within(book.flush())
        assert [r.id for r in await store.cancelled_sessions(0)] == ["cksess_2"]
        # live_sessions(0) would list an expired row too: none was carried over
        assert sorted(r.id for r in await store.live_sessions(0)) == ["cksess_1", "cksess_2"]
    finally:
        await book.close()
        await store.close()


async def test_session_rows_keep_one_random_keyed_index_and_every_lookup_uses_an_index(opened):
    """Each issued session is a row, and an index keyed by a random value costs ~10 µs of CPU per row
    (BENCHMARKS.md): the secret hash's is the only one an insert maintains, besides expires_at's (in time
    order: cheap). The lookup by secret, the cancel, the purge and the poll for other workers' cancels
    must not scan the table."""
    statements = await traced(opened.store)
    opened.book.issue(record(1))
    await within(opened.book.flush())
    opened.book.cancel("cksess_1")
    await within(opened.book.flush())
    await opened.store.session_by_hash(record(1).secret_hash)
    await opened.store.cancelled_sessions(0)
    opened.book.purge(time.time())
    await within(opened.book.flush())
    await opened.store.db.set_trace_callback(None)
    lookups = [s for s in statements
               if s.startswith(("SELECT * FROM sessions", "UPDATE sessions", "DELETE FROM sessions"))]
    assert len(lookups) == 4, statements
    with raw(opened.path) as db:
        for sql in lookups:
            plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql))
            assert "USING INDEX" in plan, (sql, plan)
        indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessions'")
        written_by_insert = {name for name, sql in indexes if sql is None or "WHERE status = 'cancelled'" not in sql}
    assert written_by_insert == {"sqlite_autoindex_sessions_1", "sessions_expires_at"}  # the first: secret_hash UNIQUE
