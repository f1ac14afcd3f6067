"""The workflow registry: entries from SQLite, config.yaml and CHATKIT_WORKFLOW_ID, merged by slug.

Sources merge in this order and the first to declare a slug wins: managed entries (SQLite, oldest
first), then `workflows:` in config.yaml, then the legacy CHATKIT_WORKFLOW_ID as `hosted-workflow`.
The merged view is an immutable `Catalog`. Every change writes the store first, then builds a new
catalog and swaps it in whole: a request reads one consistent view and never waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import re
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from aiohttp import web

from . import errors, keys
from .realtime import RealtimeOptions
from .schema import ConfigError, build, dump, join
from .storage import Conflict, Store

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("chatkit_gateway.registry")

SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
SLUG_RULE = "1 to 63 characters among a-z, 0-9, '_' and '-', starting with a letter or a digit"
WORKFLOW_ID = re.compile(r"wf_[A-Za-z0-9]+")
PINNED_VERSION = re.compile(r"[0-9]+")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DIRECT = "direct"  # a server entry's `proxy:` that bypasses HTTPS_PROXY/HTTP_PROXY
LEGACY_SLUG = "hosted-workflow"
LEGACY_LABEL = "Hosted ChatKit workflow"
START_KEY = "start_workflow"  # the kv row holding the Start slug set through the API

Kind = Literal["hosted", "server"]
Source = Literal["managed", "config", "legacy"]
T = TypeVar("T")


def first_wins(items: Iterable[T], key: Callable[[T], str]) -> tuple[tuple[T, ...], tuple[tuple[T, T], ...]]:
    """The items with distinct keys, the first of each key winning; and each shadowed item with its winner."""
    winners: dict[str, T] = {}
    shadowed = []
    for item in items:
        if key(item) in winners:
            shadowed.append((item, winners[key(item)]))
        else:
            winners[key(item)] = item
    return tuple(winners.values()), tuple(shadowed)


def canonical_slug(value: object) -> str | None:
    """The slug as stored and compared (lookups ignore case), or None when `value` is not a slug.

    Nothing else is rewritten: `"Support Pro"` is not a slug, and never becomes one silently.
    """
    if not isinstance(value, str) or not value.isascii():
        return None
    slug = value.lower()
    return slug if SLUG.fullmatch(slug) else None


def at_least(name: str, value: int | None, low: int, high: int | None = None) -> None:
    if value is None:
        return
    if value < low or (high is not None and value > high):
        raise ConfigError(name, f"expected {low} to {high}, got {value}" if high else f"expected at least {low}, got {value}")


# Session settings, mirroring what POST /v1/chatkit/sessions accepts. None means "not set here".

@dataclass(frozen=True)
class ThreadTitling:
    enabled: bool | None = None


@dataclass(frozen=True)
class FileUpload:
    enabled: bool | None = None
    max_files: int | None = None
    max_file_size: int | None = None  # megabytes

    def __post_init__(self) -> None:
        at_least("max_files", self.max_files, 1)
        at_least("max_file_size", self.max_file_size, 1, 512)


@dataclass(frozen=True)
class History:
    enabled: bool | None = None
    recent_threads: int | None = None  # None: unlimited

    def __post_init__(self) -> None:
        at_least("recent_threads", self.recent_threads, 1)


@dataclass(frozen=True)
class ChatKitConfiguration:
    automatic_thread_titling: ThreadTitling | None = None
    file_upload: FileUpload | None = None
    history: History | None = None


@dataclass(frozen=True)
class RateLimits:
    max_requests_per_1_minute: int | None = None

    def __post_init__(self) -> None:
        at_least("max_requests_per_1_minute", self.max_requests_per_1_minute, 1)


@dataclass(frozen=True)
class SessionOptions:
    """A session's settings: a workflow's own win over `sessions:` in config.yaml, which win over these."""

    expires_after: int | None = None  # seconds
    rate_limits: RateLimits | None = None
    chatkit_configuration: ChatKitConfiguration | None = None

    def __post_init__(self) -> None:
        at_least("expires_after", self.expires_after, 1)


# The upstream's own defaults, sent explicitly so that the TTL we report is the one we asked for.
UPSTREAM_TTL_SECONDS = 600
UPSTREAM_SESSION_DEFAULTS = SessionOptions(expires_after=UPSTREAM_TTL_SECONDS,
                                           rate_limits=RateLimits(max_requests_per_1_minute=10))


def layered(base: T, over: T | None) -> T:
    """`over` where it sets a value, `base` elsewhere; nested settings merge field by field."""
    if over is None:
        return base
    if base is None:
        return over
    values = {}
    for f in dataclasses.fields(base):  # type: ignore[arg-type]
        mine, theirs = getattr(base, f.name), getattr(over, f.name)
        if dataclasses.is_dataclass(mine) and dataclasses.is_dataclass(theirs):
            values[f.name] = layered(mine, theirs)
        else:
            values[f.name] = mine if theirs is None else theirs
    return type(base)(**values)


def pruned(value: Any) -> Any:
    """A dumped settings tree without its unset (None) values and the mappings left empty."""
    if isinstance(value, dict):
        kept = {k: pruned(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in kept.items() if v != {}}
    return value


@dataclass(frozen=True)
class ServerTimeouts:
    """A server entry's own timeouts, in seconds; unset ones are `upstream.timeouts`'."""

    connect: float | None = None
    read: float | None = None  # idle time between two reads; a stream may last longer than this

    def __post_init__(self) -> None:
        for name in ("connect", "read"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(name, "must be positive")


# Entries ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkflowEntry:
    """One registry entry. `kind` says which fields apply: a hosted entry names a published
    Agent Builder workflow (`workflow_id`) and the settings of the sessions minted for it; a server
    entry names a self-hosted ChatKit server (`url`), which the gateway relays the ChatKit protocol to."""

    slug: str
    kind: Kind = "hosted"
    workflow_id: str | None = None
    label: str | None = None  # defaults to the slug
    description: str | None = None
    version: str | int | None = None  # a pinned version, held as a string; never "latest"
    state_variables: Mapping[str, Any] | None = None
    session: SessionOptions = field(default_factory=SessionOptions)
    realtime: RealtimeOptions | None = None  # how its phone calls are answered, over telephony.realtime
    url: str | None = None  # server: the endpoint where its ChatKitServer.process() answers
    api_key_env: str | None = None  # server: the variable holding a key sent as Authorization: Bearer
    proxy: str | None = None  # server: a forward proxy URL, or "direct"; unset: HTTPS_PROXY/HTTP_PROXY/NO_PROXY
    timeouts: ServerTimeouts | None = None  # server
    replaces: str | None = None  # server: the hosted slug it is meant to take over (python -m gateway migrate-plan)
    source: Source = "config"
    created_at: float | None = None  # managed entries: when created, which orders them

    def __post_init__(self) -> None:
        slug = canonical_slug(self.slug)
        if slug is None:
            raise ConfigError("slug", f"{self.slug!r} is not a slug ({SLUG_RULE})")
        label = self.label.strip() if isinstance(self.label, str) else ""
        if len(label) > 128:
            raise ConfigError("label", "at most 128 characters")
        description = self.description.strip() if isinstance(self.description, str) else ""
        if len(description) > 512:
            raise ConfigError("description", "at most 512 characters")
        object.__setattr__(self, "slug", slug)
        object.__setattr__(self, "label", label or slug)
        object.__setattr__(self, "description", description or None)
        KIND_RULES[self.kind](self)


HOSTED_ONLY = ("workflow_id", "version", "state_variables")
SERVER_ONLY = ("url", "api_key_env", "proxy", "timeouts", "replaces")


def only_for(kind: str, entry: WorkflowEntry, names: Iterable[str]) -> None:
    """Refuse fields of another kind, so a half-done flip fails loudly instead of being ignored."""
    for name in names:
        if getattr(entry, name) is not None:
            raise ConfigError(name, f"applies to kind: {kind} only")


def check_hosted(entry: WorkflowEntry) -> None:
    only_for("server", entry, SERVER_ONLY)
    if entry.workflow_id is None:
        raise ConfigError("workflow_id", "is required for a hosted workflow")
    if not WORKFLOW_ID.fullmatch(entry.workflow_id):
        raise ConfigError("workflow_id", f"expected wf_ followed by letters and digits, got {entry.workflow_id!r}")
    if entry.version is not None:
        version = str(entry.version)
        if version.lower() == "latest":
            raise ConfigError("version", "'latest' breaks chats silently; pin a version number or leave it out")
        if not PINNED_VERSION.fullmatch(version):
            raise ConfigError("version", f"expected a version number, got {version!r}")
        object.__setattr__(entry, "version", version)
    for name, value in (entry.state_variables or {}).items():
        if not 1 <= len(name) <= 64:
            raise ConfigError(join("state_variables", name), "names are 1 to 64 characters")
        if not isinstance(value, (str, int, float, bool)) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(join("state_variables", name), "values are strings, numbers or booleans")


def check_http_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, f"expected an http(s) URL, got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(name, "must not carry credentials, a query or a fragment")


def check_server(entry: WorkflowEntry) -> None:
    only_for("hosted", entry, HOSTED_ONLY)
    if entry.session != SessionOptions():
        raise ConfigError("session", "applies to kind: hosted only (a ChatKit server keeps its own settings)")
    if entry.url is None:
        raise ConfigError("url", "is required for a ChatKit server")
    check_http_url("url", entry.url)
    if entry.api_key_env is not None and not ENV_NAME.fullmatch(entry.api_key_env):
        raise ConfigError("api_key_env", "expected the name of an environment variable (the key itself is never stored)")
    if entry.proxy is not None and entry.proxy != DIRECT:
        check_http_url("proxy", entry.proxy)
    if entry.replaces is not None:
        replaces = canonical_slug(entry.replaces)
        if replaces is None:
            raise ConfigError("replaces", f"{entry.replaces!r} is not a slug ({SLUG_RULE})")
        object.__setattr__(entry, "replaces", replaces)


# What each kind requires of an entry; a new kind adds its fields to WorkflowEntry and a rule here.
KIND_RULES: dict[str, Callable[[WorkflowEntry], None]] = {"hosted": check_hosted, "server": check_server}

SET_BY_GATEWAY = ("source", "created_at")


def parse_entry(data: object, path: str = "", *, source: Source,
                created_at: float | None = None) -> WorkflowEntry:
    """The one validation of an entry: for config.yaml, the HTTP API, the store and the admin pages."""
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    for name in SET_BY_GATEWAY:
        if name in data:
            raise ConfigError(join(path, name), "unknown key (set by the gateway)")
    return build(WorkflowEntry, {**data, "source": source, "created_at": created_at}, path)


def entry_fields(entry: WorkflowEntry) -> dict[str, Any]:
    """The entry as a user declares it: what the store keeps and what PATCH starts from."""
    fields = pruned(dump(entry))
    for name in SET_BY_GATEWAY:
        fields.pop(name, None)
    return fields


def legacy_entry(workflow_id: str) -> WorkflowEntry:
    """CHATKIT_WORKFLOW_ID as the seed describes it: one more workflow, slug `hosted-workflow`."""
    try:
        return WorkflowEntry(slug=LEGACY_SLUG, workflow_id=workflow_id.strip(), label=LEGACY_LABEL, source="legacy")
    except ConfigError as exc:
        raise ConfigError("CHATKIT_WORKFLOW_ID", exc.reason) from None


def request_error(exc: ConfigError, data: Mapping[str, Any]) -> errors.GatewayError:
    """The HTTP error for an entry that failed validation, named after its first bad field."""
    name = exc.path.split(".", 1)[0].split("[", 1)[0]
    if name == "slug":
        return errors.InvalidSlug(slug=data.get("slug"))
    if name == "workflow_id":
        return errors.InvalidWorkflowId(f"workflow_id: {exc.reason}.")
    return errors.InvalidField(f"{exc.path}: {exc.reason}.", field=exc.path)


# The merged view -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Catalog:
    """Every source merged: one consistent view, never changed once built."""

    entries: tuple[WorkflowEntry, ...] = ()  # the entries that won their slug, in order
    shadowed: tuple[tuple[WorkflowEntry, WorkflowEntry], ...] = ()  # (entry, the entry that won its slug)
    start: str | None = None  # the Start slug (the API's wins over the file's); it may not resolve

    @classmethod
    def merge(cls, managed: Iterable[WorkflowEntry], config: Iterable[WorkflowEntry],
              legacy: WorkflowEntry | None, start: str | None) -> Catalog:
        winners, shadowed = first_wins((*managed, *config, *([legacy] if legacy else [])), lambda e: e.slug)
        return cls(winners, shadowed, start)

    @cached_property
    def _by_slug(self) -> dict[str, WorkflowEntry]:
        return {entry.slug: entry for entry in self.entries}

    def find(self, slug: object) -> WorkflowEntry | None:
        canonical = canonical_slug(slug)
        return None if canonical is None else self._by_slug.get(canonical)

    def find_by_workflow_id(self, workflow_id: object) -> WorkflowEntry | None:
        if workflow_id is None:
            return None  # server entries have no workflow id
        return next((entry for entry in self.entries if entry.workflow_id == workflow_id), None)

    def default(self) -> WorkflowEntry | None:
        """The Start slug if it resolves; else the first managed entry; else the first of all."""
        if self.start is not None and (entry := self.find(self.start)) is not None:
            return entry
        managed = [entry for entry in self.entries if entry.source == "managed"]
        return managed[0] if managed else next(iter(self.entries), None)

    def resolve(self, requested: object | None) -> WorkflowEntry:
        """The one resolution rule: the entry a request names (in any case), or the default when it names none."""
        if requested is None:
            entry = self.default()
            if entry is None:
                raise errors.HostedWorkflowNotConfigured()
            return entry
        if canonical_slug(requested) is None:
            raise errors.InvalidSlug(slug=requested)
        entry = self.find(requested)
        if entry is None:
            raise errors.HostedWorkflowNotFound(slug=requested)
        return entry

    def summary(self) -> dict[str, Any]:
        """A short, loggable description (for the audit log and reload answers)."""
        return {"workflows": [described_briefly(e) for e in self.entries], "start": self.start,
                "shadowed": [f"{e.slug} ({e.source}, shadowed by {winner.source})" for e, winner in self.shadowed]}


def described_briefly(entry: WorkflowEntry) -> str:
    """`slug (source)`, and the kind when it is not hosted, so that an audited reload shows a flip."""
    kind = "" if entry.kind == "hosted" else f", {entry.kind}"
    return f"{entry.slug} ({entry.source}{kind})"


@dataclass(frozen=True)
class FileSources:
    """What config.yaml and the environment declare; read again on every reload."""

    workflows: tuple[WorkflowEntry, ...] = ()
    start: str | None = None
    legacy: WorkflowEntry | None = None

    @classmethod
    def of(cls, settings: Settings) -> FileSources:
        legacy = legacy_entry(settings.legacy_workflow_id) if settings.legacy_workflow_id else None
        return cls(settings.workflows, settings.start.workflow, legacy)


async def read_managed(store: Store) -> tuple[WorkflowEntry, ...]:
    """The managed entries, oldest first; a row that no longer validates is logged and left out."""
    entries = []
    for record in await store.list_workflows():
        try:
            entries.append(parse_entry({**record.data, "slug": record.slug}, f"workflows table, slug {record.slug}",
                                       source="managed", created_at=record.created_at))
        except ConfigError as exc:
            log.error("managed workflow left out: %s", exc, extra={"slug": record.slug, "error": "invalid_entry"})
    return tuple(entries)


# The live registry -----------------------------------------------------------------------------

class Registry:
    """The live registry. Readers take `catalog`; writers change the store, then swap in a new catalog."""

    def __init__(self, store: Store, sources: FileSources, *, reread: Callable[[], Settings],
                 upstream_key_set: bool, on_reload: Callable[[str], None] = lambda result: None) -> None:
        self.store = store
        self._sources = sources
        self._reread = reread
        self._reloaded: list[Callable[[Settings], None]] = []
        self._upstream_key_set = upstream_key_set
        self._on_reload = on_reload
        self._managed: tuple[WorkflowEntry, ...] = ()
        self._stored_start: str | None = None
        self._failures: dict[str, str] = {}  # slug -> why its last session creation made it unusable
        self._lock = asyncio.Lock()  # changes apply one at a time, so catalogs follow the store's order
        self.catalog = self._merged()

    def _merged(self) -> Catalog:
        return Catalog.merge(self._managed, self._sources.workflows, self._sources.legacy,
                             self._stored_start or self._sources.start)

    def _swap(self) -> None:
        self.catalog = self._merged()

    # Reads, for handlers and plugins

    def resolve(self, requested: object | None) -> WorkflowEntry:
        return self.catalog.resolve(requested)

    def find(self, slug: object) -> WorkflowEntry | None:
        return self.catalog.find(slug)

    def available(self, entry: WorkflowEntry) -> bool:
        """The upstream key is set (hosted entries need it) and the entry's last session creation did not
        fail for auth or not-found."""
        return (self._upstream_key_set or entry.kind != "hosted") and entry.slug not in self._failures

    def note_session_outcome(self, slug: str, error_code: str | None) -> None:
        if error_code is None:
            self._failures.pop(slug, None)
        elif error_code in ("upstream_auth_failed", "upstream_workflow_not_found"):
            self._failures[slug] = error_code

    # Loading and following the store

    async def load(self) -> None:
        async with self._lock:
            self._managed = await read_managed(self.store)
            self._stored_start = await self.store.get_value(START_KEY)
            self._swap()
        self._log_shadowed()

    def _log_shadowed(self) -> None:
        for entry, winner in self.catalog.shadowed:
            log.warning("workflow %r from %s is shadowed by the %s entry of the same slug", entry.slug,
                        entry.source, winner.source, extra={"slug": entry.slug})

    # Changes, for the admin API and pages; each is audited

    def _validated(self, data: Mapping[str, Any], created_at: float | None = None) -> WorkflowEntry:
        try:
            return parse_entry(data, source="managed", created_at=created_at)
        except ConfigError as exc:
            raise request_error(exc, data) from None

    def _managed_entry(self, slug: object) -> WorkflowEntry:
        """The managed entry `slug` names; 404 when nothing has that slug, 409 when config.yaml owns it."""
        entry = self.catalog.resolve(slug)
        if entry.source != "managed":
            raise errors.HostedWorkflowReadOnly(slug=entry.slug, source=entry.source)
        return entry

    async def create(self, data: Mapping[str, Any], actor: str) -> WorkflowEntry:
        entry = self._validated(data)
        async with self._lock:
            existing = self.catalog.find(entry.slug)  # whichever source has it: a shadowed slug also has a winner
            if existing is not None:
                raise errors.HostedWorkflowConflict(slug=entry.slug, source=existing.source)
            try:
                record = await self.store.add_workflow(entry.slug, stored(entry))
            except Conflict:  # another process created it first
                raise errors.HostedWorkflowConflict(slug=entry.slug, source="managed") from None
            entry = dataclasses.replace(entry, created_at=record.created_at)
            self._managed += (entry,)
            self._swap()
            await self.store.audit(actor, "workflow.create", f"workflow:{entry.slug}", None, entry_fields(entry))
        twins = [e.slug for e in self.catalog.entries
                 if entry.workflow_id is not None and e.workflow_id == entry.workflow_id and e is not entry]
        if twins:
            log.warning("workflow %s is also registered as %s", entry.workflow_id, ", ".join(twins),
                        extra={"slug": entry.slug})
        return entry

    async def update(self, slug: object, changes: Mapping[str, Any], actor: str) -> WorkflowEntry:
        async with self._lock:
            current = self._managed_entry(slug)
            if "slug" in changes and canonical_slug(changes["slug"]) != current.slug:
                raise errors.InvalidField("slug: a slug cannot change; create the new one, then delete this one.",
                                          field="slug")
            entry = self._validated({**entry_fields(current), **changes}, created_at=current.created_at)
            await self.store.update_workflow(entry.slug, stored(entry))
            self._managed = tuple(entry if e.slug == entry.slug else e for e in self._managed)
            self._failures.pop(entry.slug, None)
            self._swap()
            await self.store.audit(actor, "workflow.update", f"workflow:{entry.slug}",
                                   entry_fields(current), entry_fields(entry))
        return entry

    async def delete(self, slug: object, actor: str) -> WorkflowEntry:
        async with self._lock:
            current = self._managed_entry(slug)
            await self.store.delete_workflow(current.slug)
            self._managed = tuple(e for e in self._managed if e.slug != current.slug)
            self._failures.pop(current.slug, None)
            self._swap()
            await self.store.audit(actor, "workflow.delete", f"workflow:{current.slug}", entry_fields(current), None)
        return current

    async def set_start(self, requested: object | None, actor: str) -> Catalog:
        """Name the Start workflow (it must exist), or clear the API's choice with None."""
        async with self._lock:
            slug = None if requested is None else self.catalog.resolve(requested).slug
            before = self.catalog.start
            await self.store.set_value(START_KEY, slug)
            self._stored_start = slug
            self._swap()
            await self.store.audit(actor, "start.set", "start", before, self.catalog.start)
        return self.catalog

    def on_reload(self, follow: Callable[[Settings], None]) -> None:
        """Have `follow` see each good reload of config.yaml (telephony routes are read again with it)."""
        self._reloaded.append(follow)

    async def reload(self, actor: str) -> Catalog:
        """Re-read `workflows:` and `start:` (and, through `on_reload`, `telephony.routes` and its default);
        a bad file raises ConfigError and the running config stays."""
        async with self._lock:
            try:
                settings = self._reread()
            except ConfigError as exc:
                log.error("config reload failed, keeping the running config: %s", exc,
                          extra={"error": "config_invalid", "detail": str(exc)})
                self._on_reload("error")
                raise
            before = self.catalog.summary()
            self._sources = FileSources.of(settings)
            self._swap()
            for follow in self._reloaded:
                follow(settings)
            self._on_reload("ok")
            log.info("config reloaded: %d workflows, start %s", len(self.catalog.entries), self.catalog.start)
            await self.store.audit(actor, "config.reload", "config", before, self.catalog.summary())
        self._log_shadowed()
        return self.catalog


def stored(entry: WorkflowEntry) -> dict[str, Any]:
    """What the workflows table keeps for an entry (its slug has its own column)."""
    fields = entry_fields(entry)
    fields.pop("slug")
    return fields


async def preview(settings: Settings) -> Catalog:
    """The catalog `settings` would serve, with the managed entries when the database exists."""
    managed: tuple[WorkflowEntry, ...] = ()
    stored_start = None
    if settings.storage.path != ":memory:" and Path(settings.storage.path).exists():
        store = Store(settings.storage.path)
        await store.open()
        try:
            managed = await read_managed(store)
            stored_start = await store.get_value(START_KEY)
        finally:
            await store.close()
    sources = FileSources.of(settings)
    return Catalog.merge(managed, sources.workflows, sources.legacy, stored_start or sources.start)


async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the managed entries once the store is open; reload on SIGHUP; follow other processes' changes."""
    registry = app[keys.registry]
    await registry.load()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[Any]] = set()

    async def reload_on_signal() -> None:
        with contextlib.suppress(ConfigError):  # already logged; the running config stays
            await registry.reload("signal:SIGHUP")

    def on_sighup() -> None:
        task = loop.create_task(reload_on_signal())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        listening = True
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):  # no SIGHUP here, or not the main thread
        listening = False
    app[keys.store_changes].follow("workflow registry", registry.load)
    yield
    for task in list(reloads):  # a finished task removes itself from the set
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if listening:
        loop.remove_signal_handler(signal.SIGHUP)
