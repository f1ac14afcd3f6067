"""Telephony routes: which workflow answers a called number.

A route's `number` is a number (``+15551234567``: that number only) or a prefix ending in ``*``
(``+1555*``). A call goes to the exact number's route, else to the longest matching prefix's,
else to the default workflow (TELEPHONY_DEFAULT_WORKFLOW_SLUG), else nowhere. Routes come from
SQLite (managed through the API) and from `telephony.routes` in config.yaml; a number both
declare is the managed route's. The merged table is immutable and swapped whole on change.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from . import errors
from .registry import SLUG_RULE, canonical_slug, first_wins
from .schema import ConfigError
from .storage import CallRouteRecord, Conflict, Store

log = logging.getLogger("chatkit_gateway.telephony")

SEPARATORS = re.compile(r"[\s().-]")  # how people write numbers: "+1 (555) 123-4567", "+33.1.23"
NUMBER = re.compile(r"\+?[0-9]{1,32}")
SIP_USER = re.compile(r"(?:sips?|tel):([^@;>?]+)", re.IGNORECASE)

Source = Literal["managed", "config"]


def normalised_number(text: str) -> str | None:
    """`text` as ``+`` and digits, or None when it is not a phone number."""
    number = SEPARATORS.sub("", text)
    return number if NUMBER.fullmatch(number) else None


def route_pattern(text: object) -> str | None:
    """A route's number as stored and compared: a normalised number, with its "*" when it is a prefix."""
    if not isinstance(text, str):
        return None
    number = normalised_number(text.removesuffix("*"))
    return None if number is None else number + "*" * text.endswith("*")


def called_number(sip_headers: Iterable[Mapping[str, Any]]) -> str | None:
    """The number in the first SIP `To` header (``"Sales" <sip:+1555…@host>;tag=…``, ``tel:+1555…``)."""
    for header in sip_headers:
        if str(header.get("name", "")).lower() in ("to", "t"):  # "t" is the compact form
            value = str(header.get("value", ""))
            uri = SIP_USER.search(value)
            return normalised_number(uri.group(1) if uri else value)
    return None


def last_digits(number: str | None) -> str:
    """What logs may show of a number: its last 4 digits."""
    return "…" + number[-4:] if number else "unknown"


@dataclass(frozen=True)
class CallRoute:
    number: str  # a number, or a prefix ending in "*"
    workflow: str  # a registry slug; it may not resolve (the call is then rejected)
    source: Source = field(default="config", repr=False)  # repr=False: not printed by check-config
    created_at: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        pattern = route_pattern(self.number)
        if pattern is None:
            raise ConfigError("number", f"expected + and digits, or a prefix ending in *, got {self.number!r}")
        slug = canonical_slug(self.workflow)
        if slug is None:
            raise ConfigError("workflow", f"{self.workflow!r} is not a slug ({SLUG_RULE})")
        object.__setattr__(self, "number", pattern)
        object.__setattr__(self, "workflow", slug)

    @property
    def is_prefix(self) -> bool:
        return self.number.endswith("*")

    def matches(self, number: str) -> bool:
        return number.startswith(self.number[:-1]) if self.is_prefix else number == self.number

    def described(self) -> dict[str, Any]:
        return {"number": self.number, "workflow": self.workflow, "source": self.source, "created_at": self.created_at}


def parse_route(data: object, *, source: Source, created_at: float | None = None) -> CallRoute:
    """A route from the HTTP API or the store; a bad field is a 400 naming it."""
    if not isinstance(data, Mapping):
        raise errors.InvalidJSON()
    unknown = sorted(set(data) - {"number", "workflow"})
    if unknown:
        raise errors.InvalidField(f"{unknown[0]}: unknown key (known: number, workflow).", field=unknown[0])
    for name in ("number", "workflow"):
        if not isinstance(data.get(name), str):
            raise errors.InvalidField(f"{name}: is required, as a string.", field=name)
    try:
        return CallRoute(data["number"], data["workflow"], source, created_at)
    except ConfigError as exc:
        if exc.path == "number":
            raise errors.InvalidNumber(f"number: {exc.reason}.", number=data["number"]) from None
        raise errors.InvalidSlug(slug=data["workflow"]) from None


@dataclass(frozen=True)
class Match:
    """Which rule picked a call's workflow."""

    workflow: str
    rule: Literal["exact", "prefix", "default"]
    route: CallRoute | None = None  # None for the default

    def label(self) -> str:
        """The rule for logs, a matched number shown by its last 4 digits only."""
        if self.route is None:
            return "default"
        return f"prefix {self.route.number}" if self.rule == "prefix" else f"number {last_digits(self.route.number)}"


@dataclass(frozen=True)
class RouteTable:
    """Every source merged: one consistent view, never changed once built."""

    routes: tuple[CallRoute, ...] = ()  # the routes that won their number, in order
    shadowed: tuple[tuple[CallRoute, CallRoute], ...] = ()  # (route, the route that won its number)
    default_workflow: str | None = None

    @classmethod
    def merge(cls, managed: Iterable[CallRoute], config: Iterable[CallRoute], default_workflow: str | None) -> RouteTable:
        winners, shadowed = first_wins((*managed, *config), lambda route: route.number)
        return cls(winners, shadowed, default_workflow)

    @cached_property
    def _exact(self) -> dict[str, CallRoute]:
        return {route.number: route for route in self.routes if not route.is_prefix}

    @cached_property
    def _prefixes(self) -> tuple[CallRoute, ...]:
        return tuple(sorted((route for route in self.routes if route.is_prefix), key=lambda r: -len(r.number)))

    def find(self, number: str) -> CallRoute | None:
        return next((route for route in self.routes if route.number == number), None)

    def match(self, number: str | None) -> Match | None:
        """Exact number, then the longest prefix, then the default workflow; None when nothing applies."""
        if number is not None:
            if (route := self._exact.get(number)) is not None:
                return Match(route.workflow, "exact", route)
            for route in self._prefixes:
                if route.matches(number):
                    return Match(route.workflow, "prefix", route)
        if self.default_workflow is not None:
            return Match(self.default_workflow, "default")
        return None


def managed_route(record: CallRouteRecord) -> CallRoute | None:
    try:
        return CallRoute(record.number, record.slug, "managed", record.created_at)
    except ConfigError as exc:
        log.error("telephony route left out: %s", exc, extra={"reason": "invalid_route"})
        return None


class CallRoutes:
    """The live route table. Readers take `table`; writers change the store, then swap in a new table."""

    def __init__(self, store: Store, configured: tuple[CallRoute, ...], default_workflow: str | None) -> None:
        self.store = store
        self._configured = configured
        self._default = default_workflow
        self._managed: tuple[CallRoute, ...] = ()
        self._lock = asyncio.Lock()
        self.table = self._merged()

    def configure(self, configured: tuple[CallRoute, ...], default_workflow: str | None) -> None:
        """Swap in the routes and default of a reloaded config.yaml; managed routes stay."""
        self._configured, self._default = configured, default_workflow
        self.table = self._merged()

    def _merged(self) -> RouteTable:
        return RouteTable.merge(self._managed, self._configured, self._default)

    async def load(self) -> None:
        async with self._lock:
            records = await self.store.list_call_routes()
            self._managed = tuple(route for record in records if (route := managed_route(record)) is not None)
            self.table = self._merged()
        for route, winner in self.table.shadowed:
            log.warning("telephony route %s from config.yaml is shadowed by the managed route of the same number",
                        route.number, extra={"slug": winner.workflow})

    def managed(self, number: str) -> CallRoute:
        """The managed route for `number`; 400 when it is no number, 404 when no route has it, 409 when
        config.yaml owns it."""
        pattern = route_pattern(number)
        if pattern is None:
            raise errors.InvalidNumber(number=number)
        route = self.table.find(pattern)
        if route is None:
            raise errors.TelephonyRouteNotFound(number=pattern)
        if route.source != "managed":
            raise errors.TelephonyRouteReadOnly(number=pattern)
        return route

    async def create(self, route: CallRoute, actor: str) -> CallRoute:
        async with self._lock:
            existing = self.table.find(route.number)
            if existing is not None:
                raise errors.TelephonyRouteConflict(number=route.number, source=existing.source)
            try:
                record = await self.store.add_call_route(route.number, route.workflow)
            except Conflict:  # another process created it first
                raise errors.TelephonyRouteConflict(number=route.number, source="managed") from None
            route = CallRoute(route.number, route.workflow, "managed", record.created_at)
            self._managed += (route,)
            self.table = self._merged()
            await self.store.audit(actor, "telephony_route.create", f"telephony_route:{route.number}", None,
                                   {"workflow": route.workflow})
        return route

    async def update(self, number: str, workflow: str, actor: str) -> CallRoute:
        async with self._lock:
            current = self.managed(number)
            route = parse_route({"number": current.number, "workflow": workflow}, source="managed",
                                created_at=current.created_at)
            await self.store.update_call_route(route.number, route.workflow)
            self._managed = tuple(route if r.number == route.number else r for r in self._managed)
            self.table = self._merged()
            await self.store.audit(actor, "telephony_route.update", f"telephony_route:{route.number}",
                                   {"workflow": current.workflow}, {"workflow": route.workflow})
        return route

    async def delete(self, number: str, actor: str) -> CallRoute:
        async with self._lock:
            current = self.managed(number)
            await self.store.delete_call_route(current.number)
            self._managed = tuple(r for r in self._managed if r.number != current.number)
            self.table = self._merged()
            await self.store.audit(actor, "telephony_route.delete", f"telephony_route:{current.number}",
                                   {"workflow": current.workflow}, None)
        return current
