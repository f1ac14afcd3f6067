"""Gateway-made errors: one class per stable code, one JSON shape for all of them.

The body is always ``{"error": code, "message": text, "request_id": id, **context}``.
Each code is documented in the README; never rename one.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    message: ClassVar[str] = "The gateway failed to handle the request."

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None,
                 **context: Any) -> None:
        super().__init__(message or self.message)
        self.text = message or self.message
        self.headers = headers or {}
        self.context = context

    def body(self, request_id: str) -> dict[str, Any]:
        return {"error": self.code, "message": self.text, "request_id": request_id, **self.context}


class InternalError(GatewayError):
    pass


class BadRequest(GatewayError):
    status, code, message = 400, "bad_request", "The request is malformed."


class InvalidJSON(GatewayError):
    status, code, message = 400, "invalid_json", "The request body must be a JSON object."


class InvalidPath(GatewayError):
    status, code, message = 400, "invalid_path", "The path is not a valid ChatKit API path."


class NotFound(GatewayError):
    status, code, message = 404, "not_found", "No such route."


class MethodNotAllowed(GatewayError):
    status, code, message = 405, "method_not_allowed", "This method is not allowed on this route."


class BodyTooLarge(GatewayError):
    status, code, message = 413, "body_too_large", "The request body is larger than the gateway accepts."


class Unauthenticated(GatewayError):
    status, code, message = 401, "unauthenticated", "A valid credential is required."


class InvalidClientSecret(GatewayError):
    status, code, message = 401, "invalid_client_secret", \
        "This client secret was not issued by this gateway, or it has expired or been cancelled."


class Forbidden(GatewayError):
    status, code, message = 403, "forbidden", "You are not allowed to do this."


class TooManyRequests(GatewayError):
    status, code, message = 429, "rate_limited", "Too many requests; slow down."


class UpstreamNotConfigured(GatewayError):
    status, code, message = 503, "upstream_not_configured", "The upstream API key is not configured."


class UpstreamUnavailable(GatewayError):
    status, code, message = 502, "upstream_unavailable", "The upstream could not be reached."


class UpstreamProxyError(GatewayError):
    status, code, message = 502, "upstream_proxy_error", "The forward proxy refused or failed the connection."


class UpstreamTimeout(GatewayError):
    status, code, message = 504, "upstream_timeout", "The upstream did not answer in time."


class UpstreamAuthFailed(GatewayError):
    status, code, message = 502, "upstream_auth_failed", "The upstream rejected the gateway's credentials."


class UpstreamWorkflowNotFound(GatewayError):
    status, code, message = 502, "upstream_workflow_not_found", "The upstream does not know this workflow."


class UpstreamRateLimited(GatewayError):
    status, code, message = 429, "upstream_rate_limited", "The upstream is rate limiting; retry later."


class UpstreamError(GatewayError):
    status, code, message = 502, "upstream_error", "The upstream failed."


class InvalidField(GatewayError):
    status, code, message = 400, "invalid_field", "A field of the request is invalid."


class InvalidSlug(GatewayError):
    status, code, message = 400, "invalid_slug", \
        "A slug is 1 to 63 characters among a-z, 0-9, '_' and '-', starting with a letter or a digit."


class InvalidWorkflowId(GatewayError):
    status, code, message = 400, "invalid_workflow_id", "A workflow id is wf_ followed by letters and digits."


class HostedWorkflowNotConfigured(GatewayError):
    status, code, message = 400, "hosted_workflow_not_configured", "No hosted workflow is configured on this gateway."


class HostedWorkflowNotFound(GatewayError):
    status, code, message = 404, "hosted_workflow_not_found", "No hosted workflow has the requested slug."


class HostedWorkflowConflict(GatewayError):
    status, code, message = 409, "hosted_workflow_conflict", "A workflow with this slug already exists."


class HostedWorkflowReadOnly(GatewayError):
    status, code, message = 409, "hosted_workflow_read_only", \
        "This workflow is declared in config.yaml or CHATKIT_WORKFLOW_ID; change it there."


class WorkflowNotServer(GatewayError):
    status, code, message = 409, "workflow_not_server", \
        "This workflow is not a ChatKit server; POST /api/chatkit/session says how to reach it."


class SessionNotFound(GatewayError):
    status, code, message = 404, "session_not_found", "No such session."


class ConfigInvalid(GatewayError):
    status, code, message = 400, "config_invalid", "The config file is invalid; the running config is kept."


class InvalidNumber(GatewayError):
    status, code, message = 400, "invalid_number", \
        "A route number is + and digits (+15551234567), or a prefix ending in * (+1555*)."


class TelephonyRouteNotFound(GatewayError):
    status, code, message = 404, "telephony_route_not_found", "No telephony route has this number."


class TelephonyRouteConflict(GatewayError):
    status, code, message = 409, "telephony_route_conflict", "A telephony route for this number already exists."


class TelephonyRouteReadOnly(GatewayError):
    status, code, message = 409, "telephony_route_read_only", "This route is declared in config.yaml; change it there."


class WebhookSignatureInvalid(GatewayError):
    status, code, message = 401, "webhook_signature_invalid", \
        "The webhook signature is missing, wrong or outside the time tolerance; nothing was done."


class WebhookInProgress(GatewayError):
    status, code, message = 409, "webhook_in_progress", \
        "Another worker is acting on this delivery; retry later and it will be answered as a replay."


class TelephonyNotConfigured(GatewayError):
    status, code, message = 503, "telephony_not_configured", \
        "No webhook secret is configured (OPENAI_WEBHOOK_SECRET or telephony.webhook_secret)."


class CallControlFailed(GatewayError):
    status, code, message = 502, "call_control_failed", "The upstream refused to accept or reject the call."
