"""aiohttp.web, one process, asyncio's own loop: python3 aiohttp_app.py WORKLOAD PORT [UPSTREAM_URL]
(d) uses aiohttp's ClientSession (keep-alive pool)."""
import asyncio
import sys

import aiohttp
from aiohttp import web

workload, port = sys.argv[1], int(sys.argv[2])
upstream = sys.argv[3] if len(sys.argv) > 3 else None
HELLO = "Hello, World!"


async def plaintext(request):
    return web.Response(text=HELLO)


async def json_(request):
    return web.json_response({"message": HELLO})


async def sleep(request):
    await asyncio.sleep(0.01)
    return web.Response(text=HELLO)


async def proxied(request):
    async with request.app["client"].get(upstream) as r:
        return web.Response(text=await r.text())


async def post(request):
    return web.Response(text=str(len(await request.read())))


async def start_client(app):
    app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await app["client"].close()


handlers = {"a": plaintext, "b": json_, "c": sleep, "d": proxied, "e": post, "g": plaintext}
app = web.Application(client_max_size=1 << 20)
if workload == "d":
    app.cleanup_ctx.append(start_client)
app.router.add_route("*", "/", handlers[workload])
web.run_app(app, host="127.0.0.1", port=port, backlog=4096, access_log=None, print=None)
