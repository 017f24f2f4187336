"""WebSocket echo on Python's `websockets` (asyncio): python3 ws_websockets.py PORT"""
import asyncio
import sys

import websockets


async def echo(ws):
    async for message in ws:
        await ws.send(message)


async def main(port):
    async with websockets.serve(echo, "127.0.0.1", port, compression=None, backlog=4096):
        await asyncio.Future()


asyncio.run(main(int(sys.argv[1])))
