"""FastAPI on uvicorn, one process: python3 fastapi_app.py WORKLOAD PORT [UPSTREAM_URL]
(b) returns a dict (FastAPI's own serialisation); (d) uses httpx.AsyncClient."""
import asyncio
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

workload, port = sys.argv[1], int(sys.argv[2])
upstream = sys.argv[3] if len(sys.argv) > 3 else None
HELLO = "Hello, World!"
app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
client = None

if workload in ("a", "g"):
    @app.get("/", response_class=PlainTextResponse)
    async def plaintext():
        return HELLO
elif workload == "b":
    @app.get("/")
    async def json_():
        return {"message": HELLO}
elif workload == "c":
    @app.get("/", response_class=PlainTextResponse)
    async def sleep():
        await asyncio.sleep(0.01)
        return HELLO
elif workload == "d":
    @app.get("/", response_class=PlainTextResponse)
    async def proxied():
        global client
        if client is None:
            import httpx
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256, max_keepalive_connections=256))
        r = await client.get(upstream)
        return r.text
elif workload == "e":
    @app.post("/", response_class=PlainTextResponse)
    async def post(request: Request):
        return str(len(await request.body()))
else:
    sys.exit(f"fastapi_app.py: no workload {workload}")

uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            backlog=4096, lifespan="off")
