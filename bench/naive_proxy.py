"""The "naive aiohttp proxy" of issue 9's scale (≈ 5,300 req/s where nginx does ≈ 85,000): aiohttp's
server and ClientSession, uvloop, no policy at all. Measured in the relay axis beside the gateway, so
the run says how this machine compares with the issue's numbers.

    python -m bench.naive_proxy --port 8081 --upstream http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

CLIENT = web.AppKey("client", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def relay(request: web.Request) -> web.Response:
    body = await request.read()
    url = request.app[UPSTREAM] + "/v1/chatkit/" + request.match_info["tail"]
    async with request.app[CLIENT].request(request.method, url, data=body,
                                           headers={"Content-Type": "application/json"}) as answer:
        return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")


async def client_ctx(app: web.Application) -> AsyncIterator[None]:
    app[CLIENT] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    yield
    await app[CLIENT].close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_proxy")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/api/chatkit/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
