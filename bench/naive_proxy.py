"""Two policy-free proxies for scale in the relay axis, each aiohttp's server under uvloop:

- the "naive aiohttp proxy" of issue 9 (≈ 5,300 req/s where nginx does ≈ 85,000), with aiohttp's
  ClientSession, so the run says how this machine compares with the issue's numbers;
- the "floor" (`--client gateway`): the gateway's own upstream client (gateway/http1.py) and nothing
  else, the most a gateway built on aiohttp's server and this client can do; what the gateway costs
  beyond it is its policy (headers, sessions, chain).

    python -m bench.naive_proxy --port 8081 --upstream http://127.0.0.1:8080 [--client gateway]
"""

from __future__ import annotations

import argparse
import gc
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import uvloop
from aiohttp import web

from gateway import http1

CLIENT = web.AppKey("client", aiohttp.ClientSession)
HTTP1 = web.AppKey("http1", http1.Client)
UPSTREAM = web.AppKey("upstream", str)
JSON = {"Content-Type": "application/json"}


async def relay(request: web.Request) -> web.Response:
    body = await request.read()
    url = request.app[UPSTREAM] + "/v1/chatkit/" + request.match_info["tail"]
    async with request.app[CLIENT].request(request.method, url, data=body, headers=JSON) as answer:
        return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")


def upstream_client(upstream: str) -> http1.Client:
    """The gateway's upstream client for `upstream` (http://host:port), as bare_proxy uses it too."""
    parts = urlsplit(upstream)
    return http1.Client(http1.Origin("http", parts.hostname or "", parts.port or 80), ssl_context=None,
                        connect_timeout=5.0)


async def relayed(client: http1.Client, method: str, tail: str, body: bytes | None) -> tuple[int, bytes]:
    """POST/GET… /v1/chatkit/<tail> upstream through `client`: the answer's status and whole body."""
    answer = await client.send(method, "/v1/chatkit/" + tail, JSON, body, idle_timeout=None, deadline=None)
    try:
        return answer.status, await answer.read()
    finally:
        client.release(answer)


async def relay_http1(request: web.Request) -> web.Response:
    status, raw = await relayed(request.app[HTTP1], request.method, request.match_info["tail"], await request.read())
    return web.Response(body=raw, status=status, content_type="application/json")


async def client_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[CLIENT].close()


async def http1_ctx(app: web.Application) -> AsyncIterator[None]:
    app[HTTP1] = upstream_client(app[UPSTREAM])
    gc.freeze()  # as the gateway does after start-up
    yield
    await app[HTTP1].close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--client", choices=("aiohttp", "gateway"), default="aiohttp")
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.cleanup_ctx.append(client_ctx if args.client == "aiohttp" else http1_ctx)
    app.router.add_route("*", "/api/chatkit/{tail:.*}", relay if args.client == "aiohttp" else relay_http1)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
