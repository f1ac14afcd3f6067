// chatkit-gateway.js: ChatKit sessions from a chatkit-gateway, for any front end. No dependencies.
//
//   import { chatKitApi } from "https://gateway.example.com/static/chatkit-gateway.js";
//   const chatkit = document.querySelector("openai-chatkit");
//   chatkit.setOptions({ api: await chatKitApi({ workflow: "assistant-voix" }) });
//
// For a hosted workflow, `api` is { getClientSecret }: it caches the client secret, mints a new one
// before `expires_at`, and shares one request among concurrent callers. For a slug served by your
// own ChatKit server, `api` is { url, domainKey }. hosted_workflow_not_configured and
// hosted_workflow_not_found are thrown as HostedWorkflowNotConfigured and HostedWorkflowNotFound.

export class ChatKitGatewayError extends Error {
  constructor(code, message, status, body) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.body = body;
  }
}

export class HostedWorkflowNotConfigured extends ChatKitGatewayError {}
export class HostedWorkflowNotFound extends ChatKitGatewayError {}

const TYPED = {
  hosted_workflow_not_configured: HostedWorkflowNotConfigured,
  hosted_workflow_not_found: HostedWorkflowNotFound,
};

function errorFrom(status, body) {
  const code = body && typeof body.error === "string" ? body.error : `http_${status}`;
  const message = body && typeof body.message === "string" ? body.message : `The gateway answered ${status}.`;
  const Type = TYPED[code] || ChatKitGatewayError;
  return new Type(code, message, status, body);
}

// options: workflow (a slug; none: the gateway's default), gateway (its origin when it is not this
// page's), endpoint ("/api/chatkit/session"), headers (sent with every call to the gateway, e.g.
// { Authorization: "Bearer gk_…" }), sessionHeaders (sent with the session request only),
// credentials ("same-origin"), refreshMargin (seconds before expiry; default a fifth of the
// lifetime, at most 60), prefetch (mint the next secret before expiry; default true), fetch, now.
export function createSessionClient(options = {}) {
  const {
    workflow,
    gateway,
    endpoint = "/api/chatkit/session",
    headers = {},
    sessionHeaders = {},
    credentials = "same-origin",
    refreshMargin,
    prefetch = true,
    fetch: fetchImpl = (...args) => globalThis.fetch(...args),
    now = () => Date.now() / 1000,
  } = options;
  const url = new URL(endpoint, gateway || globalThis.location?.href).href;
  let cached = null; // the last answer, with issued_at
  let pending = null; // the request in flight, shared by concurrent callers
  let timer = null;

  function margin(session) {
    if (refreshMargin !== undefined) return refreshMargin;
    return Math.min(60, Math.max(0, session.expires_at - session.issued_at) / 5);
  }

  function fresh(session) {
    return Boolean(session && session.client_secret) && now() < session.expires_at - margin(session);
  }

  async function mint() {
    const body = workflow ? { hosted_workflow_slug: workflow } : {};
    const response = await fetchImpl(url, {
      method: "POST",
      credentials,
      headers: { "Content-Type": "application/json", Accept: "application/json", ...headers, ...sessionHeaders },
      body: JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw errorFrom(response.status, data);
    return { ...data, issued_at: now() };
  }

  function schedule(session) {
    clearTimeout(timer);
    timer = null;
    if (!prefetch || !session.client_secret) return;
    const seconds = session.expires_at - margin(session) - now();
    timer = setTimeout(() => refresh().catch(() => {}), Math.max(0, seconds) * 1000);
  }

  function refresh() {
    if (!pending) {
      pending = mint()
        .then((session) => {
          cached = session;
          schedule(session);
          return session;
        })
        .finally(() => {
          pending = null;
        });
    }
    return pending;
  }

  // The gateway's answer: {client_secret, expires_at, session_id, workflow} or {kind: "server", api_url}.
  async function session() {
    if (cached && (cached.kind === "server" || fresh(cached))) return cached;
    return refresh();
  }

  // ChatKit's HostedApiConfig.getClientSecret: called with the secret it holds when it wants another.
  async function getClientSecret(current) {
    if (fresh(cached) && cached.client_secret !== current) return cached.client_secret;
    const next = cached && cached.client_secret === current ? await refresh() : await session();
    if (!next.client_secret) {
      throw new ChatKitGatewayError("not_hosted", "This workflow is not hosted: use api.url.", 200, next);
    }
    return next.client_secret;
  }

  // ChatKitOptions.api for this workflow, whichever kind the gateway says it is.
  async function api({ domainKey = "" } = {}) {
    const first = await session();
    if (first.kind === "server") {
      const server = { url: new URL(first.api_url, url).href, domainKey };
      if (Object.keys(headers).length) {
        server.fetch = (input, init = {}) =>
          fetchImpl(input, { ...init, credentials, headers: { ...headers, ...(init.headers || {}) } });
      }
      return server;
    }
    return { getClientSecret };
  }

  function close() {
    clearTimeout(timer);
    timer = null;
  }

  return { session, getClientSecret, api, close };
}

export async function chatKitApi(options = {}) {
  return createSessionClient(options).api(options);
}
