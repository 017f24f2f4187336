"""Starlette on uvicorn, one process: python3 starlette_app.py WORKLOAD PORT [UPSTREAM_URL]
(d) uses httpx.AsyncClient, Starlette having no client of its own."""
import asyncio
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

workload, port = sys.argv[1], int(sys.argv[2])
upstream = sys.argv[3] if len(sys.argv) > 3 else None
HELLO = "Hello, World!"
client = None


async def plaintext(request):
    return PlainTextResponse(HELLO)


async def json_(request):
    return JSONResponse({"message": HELLO})


async def sleep(request):
    await asyncio.sleep(0.01)
    return PlainTextResponse(HELLO)


async def proxied(request):
    global client
    if client is None:
        import httpx
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
    r = await client.get(upstream)
    return PlainTextResponse(r.text)


async def post(request):
    body = await request.body()
    return PlainTextResponse(str(len(body)))


handlers = {"a": plaintext, "b": json_, "c": sleep, "d": proxied, "e": post, "g": plaintext}
app = Starlette(routes=[Route("/", handlers[workload], methods=["GET", "POST"])])
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            backlog=4096, lifespan="off")
