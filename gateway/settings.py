"""Settings: frozen dataclasses loaded from config.yaml, then the environment on top.

Precedence is defaults < YAML < environment. The seed's variables (MODEL_PROVIDER, MODEL_API_BASE,
MODEL_API_KEY_ENV, the key itself, CHATKIT_WORKFLOW_ID, TELEPHONY_DEFAULT_WORKFLOW_SLUG,
HTTPS_PROXY/HTTP_PROXY/NO_PROXY) work as the seed says; any other key is overridden with
GATEWAY__SECTION__KEY. Secrets are referenced as {$env: NAME} and held as `Secret`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit, unquote

import yaml

from .registry import SessionOptions, WorkflowEntry, canonical_slug, legacy_entry, parse_entry
from .callroutes import CallRoute
from .realtime import RealtimeOptions
from .schema import ConfigError, Secret, build, resolve_env_refs
from .webhooks import DEFAULT_TOLERANCE, signing_key

OPENAI_BASE = "https://api.openai.com"
CHATKIT_SCRIPT = "https://cdn.platform.openai.com/deployments/chatkit/chatkit.js"  # OpenAI's CDN
ENV_PREFIX = "GATEWAY__"


@dataclass(frozen=True)
class ProxySettings:
    """A forward proxy; credentials are kept apart from the URL so the URL can be logged."""

    url: str
    username: Secret | None = None
    password: Secret | None = None
    source: str = "config"

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("url", f"expected http://host:port, got {mask_url(self.url)!r}")
        if parts.username or parts.password:
            raise ConfigError("url", "put proxy credentials in username/password as {$env: NAME}")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 300.0  # idle time between two reads of a stream; never a total for streams
    total: float = 60.0  # whole non-streaming calls (session minting, call control)


@dataclass(frozen=True)
class UpstreamSettings:
    provider: str = "openai"
    base: str = OPENAI_BASE
    api_key_env: str = "OPENAI_API_KEY"
    proxy: ProxySettings | None = None
    ca_bundle: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 0  # 0: no limit; every open stream holds one upstream connection
    keepalive_seconds: float = 30.0
    api_key: Secret | None = None  # read from the variable named by api_key_env, never from the file

    def __post_init__(self) -> None:
        parts = urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("base", f"expected an http(s) URL, got {self.base!r}")
        if parts.query or parts.fragment or parts.username:
            raise ConfigError("base", "must not carry a query, fragment or credentials")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ConfigError("ca_bundle", f"no such file: {self.ca_bundle}")
        object.__setattr__(self, "base", normalise_base(self.base))


@dataclass(frozen=True)
class ProxyEnvironment:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY as found in the environment (either case)."""

    https: ProxySettings | None = None
    http: ProxySettings | None = None
    no_proxy: str = ""


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    max_body_bytes: int = 64 * 1024 * 1024
    drain_seconds: float = 10.0
    heartbeat_seconds: float = 15.0
    trusted_proxies: tuple[str, ...] = ("127.0.0.1/32", "::1/128")

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError("port", f"expected 1-65535, got {self.port}")
        if self.workers < 1:
            raise ConfigError("workers", "must be at least 1")
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes", "must be positive")
        for i, cidr in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"trusted_proxies[{i}]", f"not a CIDR: {cidr!r}") from None


@dataclass(frozen=True)
class LogSettings:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


@dataclass(frozen=True)
class StorageSettings:
    path: str = "var/gateway.db"
    poll_seconds: float = 2.0  # how often changes by other processes (workers, the CLI) are looked for


@dataclass(frozen=True)
class PluginSpec:
    """One item of `plugins:`: a built-in name or a dotted path, and its options."""

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StartSettings:
    """The Start step: the workflow a session request that names none gets (the API's choice wins)."""

    workflow: str | None = None

    def __post_init__(self) -> None:
        if self.workflow is not None:
            slug = canonical_slug(self.workflow)
            if slug is None:
                raise ConfigError("workflow", f"{self.workflow!r} is not a slug")
            object.__setattr__(self, "workflow", slug)


@dataclass(frozen=True)
class SessionsSettings(SessionOptions):
    """Defaults for every ChatKit session (a workflow's own `session:` wins), and how users are named upstream."""

    user_hash_secret: Secret | None = None  # keys the upstream user ids; when unset, generated once and stored
    purge_seconds: float = 60.0  # how often expired session records are dropped

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.purge_seconds <= 0:
            raise ConfigError("purge_seconds", "must be positive")

    @property
    def options(self) -> SessionOptions:
        return SessionOptions(self.expires_after, self.rate_limits, self.chatkit_configuration)


@dataclass(frozen=True)
class IdentitySettings:
    """How the gateway tells self-hosted ChatKit servers who the user is (gateway/identity.py has the scheme)."""

    secret: Secret | None = None  # {$env: NAME}, shared with the servers; server slugs answer 503 without it

    def __post_init__(self) -> None:
        if self.secret is not None and len(self.secret.reveal()) < 32:
            raise ConfigError("secret", "use at least 32 characters (for example: openssl rand -hex 32)")


@dataclass(frozen=True)
class TelephonySettings:
    """Incoming calls: which workflow answers a called number, with what, and how webhooks are checked."""

    default_workflow: str | None = None  # TELEPHONY_DEFAULT_WORKFLOW_SLUG, which wins
    routes: tuple[CallRoute, ...] = ()  # routes managed through the API win over these
    realtime: RealtimeOptions = field(default_factory=RealtimeOptions)  # under each workflow's own realtime:
    reject_status: int = 603  # the SIP status of a call no route (or no existing workflow) answers
    webhook_secret: Secret | None = None  # else OPENAI_WEBHOOK_SECRET
    tolerance_seconds: int = DEFAULT_TOLERANCE

    def __post_init__(self) -> None:
        if self.default_workflow is not None:
            slug = canonical_slug(self.default_workflow)
            if slug is None:
                raise ConfigError("default_workflow", f"{self.default_workflow!r} is not a slug "
                                  "(set here or by TELEPHONY_DEFAULT_WORKFLOW_SLUG)")
            object.__setattr__(self, "default_workflow", slug)
        numbers: dict[str, int] = {}
        for i, route in enumerate(self.routes):
            if route.source != "config" or route.created_at is not None:
                raise ConfigError(f"routes[{i}].{'source' if route.source != 'config' else 'created_at'}",
                                  "unknown key (set by the gateway)")
            if route.number in numbers:
                raise ConfigError(f"routes[{i}].number",
                                  f"{route.number!r} is already routed by routes[{numbers[route.number]}]")
            numbers[route.number] = i
        if not 400 <= self.reject_status <= 699:
            raise ConfigError("reject_status", f"expected a SIP failure status (400-699), got {self.reject_status}")
        if self.tolerance_seconds < 1:
            raise ConfigError("tolerance_seconds", "must be positive")
        if self.webhook_secret is not None:
            try:
                signing_key(self.webhook_secret.reveal())
            except ValueError as exc:
                raise ConfigError("webhook_secret", str(exc)) from None


@dataclass(frozen=True)
class AdminSettings:
    """The admin pages under /admin and the chat page at /chat."""

    session_secret: Secret | None = None  # signs the login cookie; when unset, generated once and stored
    session_hours: float = 8.0  # how long an admin login lasts
    chatkit_script: str = CHATKIT_SCRIPT  # the ChatKit web component the chat page loads
    chatkit_domain_key: str | None = None  # sent as api.domainKey when a slug is served by your own ChatKit server

    def __post_init__(self) -> None:
        if self.session_secret is not None and len(self.session_secret.reveal()) < 32:
            raise ConfigError("session_secret", "use at least 32 characters (for example: openssl rand -hex 32)")
        if self.session_hours <= 0:
            raise ConfigError("session_hours", "must be positive")
        parts = urlsplit(self.chatkit_script)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("chatkit_script", f"expected an http(s) URL, got {self.chatkit_script!r}")


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    log: LogSettings = field(default_factory=LogSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    plugins: tuple[PluginSpec, ...] = ()
    workflows: tuple[WorkflowEntry, ...] = ()  # from config.yaml; parsed by parse_workflows
    start: StartSettings = field(default_factory=StartSettings)
    sessions: SessionsSettings = field(default_factory=SessionsSettings)
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    telephony: TelephonySettings = field(default_factory=TelephonySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    proxy_env: ProxyEnvironment = field(default_factory=ProxyEnvironment)
    legacy_workflow_id: str | None = None  # CHATKIT_WORKFLOW_ID
    admin_api_key: Secret | None = None  # GATEWAY_ADMIN_API_KEY: the auth plugin's bootstrap admin key
    source: str | None = None  # the file this came from, for reloads


def normalise_base(base: str) -> str:
    """Strip a trailing ``/`` and ``/v1`` so that ``/v1`` appears exactly once upstream."""
    base = base.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")].rstrip("/")
    return base


def mask_url(url: str) -> str:
    """The URL with any user:password replaced by ``***``."""
    parts = urlsplit(url)
    if not (parts.username or parts.password):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def proxy_from_env(url: str, name: str) -> ProxySettings:
    """A ProxySettings from a *_PROXY value, moving inline credentials out of the URL."""
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    try:
        return ProxySettings(
            url=urlunsplit((parts.scheme, host, "", "", "")),
            username=Secret(unquote(parts.username)) if parts.username else None,
            password=Secret(unquote(parts.password)) if parts.password else None,
            source=f"env:{name}",
        )
    except ConfigError as exc:
        raise ConfigError(name, exc.reason) from None


def read_proxy_env(environ: Mapping[str, str]) -> ProxyEnvironment:
    def first(*names: str) -> tuple[str, str] | None:
        for name in names:
            if environ.get(name):
                return name, environ[name]
        return None

    https = first("HTTPS_PROXY", "https_proxy")
    http = first("HTTP_PROXY", "http_proxy")
    no_proxy = first("NO_PROXY", "no_proxy")
    return ProxyEnvironment(
        https=proxy_from_env(https[1], https[0]) if https else None,
        http=proxy_from_env(http[1], http[0]) if http else None,
        no_proxy=no_proxy[1] if no_proxy else "",
    )


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """GATEWAY__SERVER__PORT=9000 sets raw['server']['port'] = 9000 (values parsed as YAML)."""
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(keys), f"{name} cannot override a non-mapping")
            node = child
        node[keys[-1]] = yaml.safe_load(environ[name])


def apply_seed_variables(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """The seed's variables, which win over the file."""
    upstream = raw.setdefault("upstream", {})
    if not isinstance(upstream, dict):
        raise ConfigError("upstream", "expected a mapping")
    for variable, key in (("MODEL_PROVIDER", "provider"), ("MODEL_API_BASE", "base"),
                          ("MODEL_API_KEY_ENV", "api_key_env")):
        if environ.get(variable):
            upstream[key] = environ[variable]
    provider = upstream.get("provider", "openai")
    if provider != "openai":
        missing = [v for v, k in (("MODEL_API_BASE", "base"), ("MODEL_API_KEY_ENV", "api_key_env"))
                   if not upstream.get(k)]
        if missing:
            raise ConfigError("upstream.provider", f"MODEL_PROVIDER={provider} requires {' and '.join(missing)}")
    if environ.get("TELEPHONY_DEFAULT_WORKFLOW_SLUG"):
        telephony = raw.setdefault("telephony", {})
        if isinstance(telephony, dict):
            telephony["default_workflow"] = environ["TELEPHONY_DEFAULT_WORKFLOW_SLUG"]


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"{path} must hold a mapping at the top")
    return data


def parse_plugins(value: Any) -> list[dict[str, Any]]:
    """`plugins:` items are {name, …options}; options are checked later by each plugin."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError("plugins", "expected a list")
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ConfigError(f"plugins[{i}]", "expected {name: <plugin>, …options}")
        options = {k: v for k, v in item.items() if k != "name"}
        specs.append({"name": item["name"], "options": options})
    return specs


def parse_workflows(value: Any) -> tuple[WorkflowEntry, ...]:
    """`workflows:` items, each validated by the registry's one rule; a slug may appear once."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("workflows", "expected a list")
    entries: dict[str, int] = {}
    parsed = []
    for i, item in enumerate(value):
        entry = parse_entry(item, f"workflows[{i}]", source="config")
        if entry.slug in entries:
            raise ConfigError(f"workflows[{i}].slug", f"{entry.slug!r} is already declared by workflows[{entries[entry.slug]}]")
        entries[entry.slug] = i
        parsed.append(entry)
    return tuple(parsed)


def with_webhook_secret(telephony: TelephonySettings, environ: Mapping[str, str]) -> TelephonySettings:
    """`telephony.webhook_secret` when the file names one, else OPENAI_WEBHOOK_SECRET (as the official SDK reads it)."""
    if telephony.webhook_secret is not None or not environ.get("OPENAI_WEBHOOK_SECRET"):
        return telephony
    try:
        return dataclasses.replace(telephony, webhook_secret=Secret(environ["OPENAI_WEBHOOK_SECRET"]))
    except ConfigError as exc:
        raise ConfigError("OPENAI_WEBHOOK_SECRET", exc.reason) from None


def load_settings(path: str | Path | None, environ: Mapping[str, str]) -> Settings:
    """Read `path` (or nothing), apply the environment, and validate everything."""
    raw = read_yaml(path) if path else {}
    apply_env_overrides(raw, environ)
    apply_seed_variables(raw, environ)
    raw = resolve_env_refs(raw, environ)
    raw["plugins"] = parse_plugins(raw.get("plugins"))
    workflows = parse_workflows(raw.pop("workflows", None))
    for key in ("proxy_env", "legacy_workflow_id", "admin_api_key", "source"):
        if key in raw:
            raise ConfigError(key, "unknown key")
    if isinstance(raw.get("upstream"), dict) and "api_key" in raw["upstream"]:
        raise ConfigError("upstream.api_key", "name the key's variable with api_key_env (MODEL_API_KEY_ENV)")
    settings: Settings = build(Settings, raw)
    legacy_workflow_id = environ.get("CHATKIT_WORKFLOW_ID") or None
    if legacy_workflow_id:
        legacy_entry(legacy_workflow_id)  # an invalid id fails start-up, naming the variable
    key = environ.get(settings.upstream.api_key_env)
    return dataclasses.replace(
        settings,
        telephony=with_webhook_secret(settings.telephony, environ),
        upstream=dataclasses.replace(settings.upstream, api_key=Secret(key) if key else None),
        proxy_env=read_proxy_env(environ),
        workflows=workflows,
        legacy_workflow_id=legacy_workflow_id,
        admin_api_key=Secret(environ["GATEWAY_ADMIN_API_KEY"]) if environ.get("GATEWAY_ADMIN_API_KEY") else None,
        source=str(path) if path else None,
    )
