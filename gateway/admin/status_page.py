"""The Status page: the seed's `curl {base}/v1/models` done live through the configured proxy, the
effective config with secrets masked, and the last hour of traffic drawn from the gateway's own data."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from aiohttp import web

from .. import errors, keys
from ..schema import dump
from ..traffic import NO_WORKFLOW, MinuteView
from ..upstream import Upstream, error_message
from . import i18n
from .charts import Series, line_chart
from .render import page

CHECK_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    url: str
    via: str
    ok: bool
    outcome: str
    milliseconds: int
    detail: str | None
    key_set: bool


async def check_upstream(upstream: Upstream) -> Check:
    """GET {base}/v1/models with the server key, through the same pooled client, proxy and trust store as the relay."""
    url = upstream.url("/v1/models")
    headers = {"Authorization": "Bearer " + upstream.api_key.reveal()} if upstream.api_key else {}
    started = time.perf_counter()
    detail = None
    try:
        async with asyncio.timeout(CHECK_SECONDS):
            async with upstream.request("GET", "/v1/models", headers=headers, stream=False) as response:
                body = await response.read()
        ok = response.status == 200
        outcome = f"{response.status} {response.reason or ''}".strip()
        if not ok:
            detail = error_message(body)
    except errors.GatewayError as error:
        ok, outcome, detail = False, error.code, error.text
    except TimeoutError:
        ok, outcome, detail = False, errors.UpstreamTimeout.code, f"no answer within {CHECK_SECONDS:g} s"
    elapsed = round((time.perf_counter() - started) * 1000)
    return Check(str(url), upstream.route.proxy_label, ok, outcome, elapsed, detail, bool(upstream.api_key))


def charts(minutes: list[MinuteView], t: i18n.Translator) -> list[dict[str, object]]:
    x_labels = (t("chart.ago", minutes=len(minutes)), t("chart.ago", minutes=len(minutes) // 2), t("chart.now"))
    errors_by_slug: dict[str, int] = {}
    for minute in minutes:
        for slug, count in minute.errors_by_workflow.items():
            errors_by_slug[slug] = errors_by_slug.get(slug, 0) + count
    failing = sorted(errors_by_slug, key=lambda slug: (-errors_by_slug[slug], slug))

    def name(slug: str) -> str:
        return t("chart.no_workflow") if slug == NO_WORKFLOW else slug

    def chart(title: str, series: list[Series], empty: str) -> dict[str, object]:
        return {"title": title, "svg": line_chart(title, series, x_labels=x_labels, empty=empty)}

    return [
        chart(t("chart.rps"), [Series(t("chart.rps"), [m.requests_per_second for m in minutes])], t("chart.no_data")),
        chart(t("chart.latency"), [Series("p50", [m.p50_ms for m in minutes]),
                                   Series("p99", [m.p99_ms for m in minutes])], t("chart.no_data")),
        chart(t("chart.errors"), [Series(name(slug), [float(m.errors_by_workflow.get(slug, 0)) for m in minutes])
                                  for slug in failing], t("chart.no_errors")),
    ]


async def show(request: web.Request) -> web.Response:
    config = request.config_dict
    t = i18n.translator(request[keys.page_language])
    check = await check_upstream(config[keys.upstream])
    effective = json.dumps(dump(config[keys.settings]), indent=2, default=str, ensure_ascii=False)
    return page(request, "status.html", section="status", check=check, config=effective,
                charts=charts(config[keys.traffic].last_hour(), t))
