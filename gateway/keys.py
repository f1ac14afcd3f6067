"""Every typed application and request key, in one place."""

from __future__ import annotations

from aiohttp import web

# The frozen settings the app was built from.
settings = web.AppKey("settings", "Settings")
# The pooled client for the model API (OpenAI or MODEL_API_BASE).
upstream = web.AppKey("upstream", "Upstream")
# Keeps silent event streams alive with SSE comments, one timer for all streams.
heartbeats = web.AppKey("heartbeats", "Heartbeats")
# The plugin chain, outermost first, built once by create_app.
plugins = web.AppKey("plugins", "tuple[Plugin, ...]")
# The SQLite store (keys, workflows, sessions, audit, routes).
store = web.AppKey("store", "Store")
# Notices commits by other processes and calls each follower's reload.
store_changes = web.AppKey("store_changes", "StoreChanges")
# The merged workflow registry, held in memory.
registry = web.AppKey("registry", "Registry")
# Issued ChatKit sessions by client-secret hash, held in memory; also derives upstream user ids.
sessions = web.AppKey("sessions", "SessionBook")
# The pooled clients of the self-hosted ChatKit servers (kind: server entries), following the registry.
servers = web.AppKey("servers", "ServerPool")
# Config reloads by result (ok | error): gateway_config_reloads_total, made by create_app.
config_reloads = web.AppKey("config_reloads", "Counter")
# Failed or suspicious authentications by reason: gateway_auth_failures_total, made by create_app.
auth_failures = web.AppKey("auth_failures", "Counter")
# The API keys held in memory and refreshed on change (set up by the auth plugin).
api_keys = web.AppKey("api_keys", "KeyBook")
# Failed authentication attempts per client IP, for the auth plugin's rate limit.
auth_limiter = web.AppKey("auth_limiter", "FailureLimiter")
# The metrics plugin's instruments, with their label children cached.
instruments = web.AppKey("instruments", "Instruments")
# Telephony routes (config.yaml and SQLite) merged, held in memory and refreshed on change.
call_routes = web.AppKey("call_routes", "CallRoutes")
# Webhook ids already acted on (in memory and SQLite), so a replay or retry acts once.
webhook_deliveries = web.AppKey("webhook_deliveries", "Deliveries")
# Incoming calls by workflow slug and outcome: gateway_telephony_calls_total, made by create_app.
telephony_calls = web.AppKey("telephony_calls", "Counter")
# Telephony webhook deliveries by result: gateway_telephony_webhooks_total, made by create_app.
telephony_webhooks = web.AppKey("telephony_webhooks", "Counter")
# The app's own Prometheus registry (never the global one).
metrics_registry = web.AppKey("metrics_registry", "CollectorRegistry")
# True once an auth plugin is in the chain: then the server key is only used for a principal.
auth_required = web.AppKey("auth_required", bool)
# Readiness, shutdown and background tasks of this process.
lifecycle = web.AppKey("lifecycle", "Lifecycle")
# Named readiness checks that plugins and subsystems add: name -> () -> (ok, detail).
readiness_checks = web.AppKey("readiness_checks", "dict[str, Callable[[], tuple[bool, str]]]")

# Per-minute request counts, latencies and errors of the gateway routes over the last hour (Status page).
traffic = web.AppKey("traffic", "Traffic")
# Signs and reads the admin session cookie, and the CSRF tokens bound to it.
admin_cookie = web.AppKey("admin_cookie", "SessionCookie")

# The request id: a well-formed incoming X-Request-ID, else a new one.
request_id = web.RequestKey("request_id", str)
# The client's address: the peer, or the rightmost untrusted X-Forwarded-For hop.
client_ip = web.RequestKey("client_ip", str)
# Whether the peer is a trusted proxy, so its X-Forwarded-* headers count.
peer_trusted = web.RequestKey("peer_trusted", bool)
# Who is calling, once auth has run.
principal = web.RequestKey("principal", "Principal")
# The workflow this request is for, when it can be known without reading the body.
workflow = web.RequestKey("workflow", "WorkflowEntry")
# The request's ChatKit client secret once checked, and its active session record (None: not one of ours).
checked_session = web.RequestKey("checked_session", "tuple[str, SessionRecord | None]")
# Facts about the upstream exchange (timings, bytes, events), filled by the handlers.
exchange = web.RequestKey("exchange", "Exchange")
# Callables that see each streamed chunk as it goes out (they must not block or keep it).
chunk_observers = web.RequestKey("chunk_observers", "list[Callable[[bytes], None]]")
# The route template, for logs and metric labels ("other" when nothing matched).
route = web.RequestKey("route", str)
# Headers plugins add to the response, written when it is prepared (streams included).
response_headers = web.RequestKey("response_headers", "list[tuple[str, str]]")
# Extra values for the access log line (e.g. the ChatKit operation), set by handlers.
log_fields = web.RequestKey("log_fields", "dict[str, Any]")
# The ChatKit operation of a request to a server slug (threads.create, items.list, … or "other"): a bounded label.
operation = web.RequestKey("operation", str)
# The admin or chat page's visit: its session cookie (or a new anonymous one), which binds CSRF tokens.
admin_visit = web.RequestKey("admin_visit", "Visit")
# Who is looking at an admin or chat page (a cookie login or trusted nginx headers); None before login.
page_user = web.RequestKey("page_user", "Principal | None")
# The language of an admin or chat page: "en" or "fr".
page_language = web.RequestKey("page_language", str)
