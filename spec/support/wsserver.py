"""WebSocket test server for spec/websocket_spec.lua, on Python's websockets package.

    wsserver.py --port-file F --pid-file F [--tls CERT KEY] [--watch-pid P]

Binds 127.0.0.1 on ephemeral ports and writes "name port" lines to --port-file
(atomically, once all listen): "plain" (websockets), "raw" (hand-written misbehaving
endpoints) and, with --tls, "tls" (websockets over TLS). Paths of the websockets
servers:

    /echo           echoes every message, text as text and binary as binary
    /fragments      on a message "N,SIZE": sends one text message of N fragments
    /big/N          sends one binary message of N bytes, then echoes
    /close/CODE/R   closes at once with CODE and reason R
    /serverping     pings the client, waits for the pong, then sends "pong received"
    /lastclose      sends "CODE REASON" of the last close a client sent to /echo
    /echo/ID        /echo, and its close is kept under ID: /lastclose/ID sends it
                    (a close of another test's /echo, collected late, cannot race it)

Paths of the raw server (it reads the request head and then):

    /noclose        answers 101, then reads and ignores everything (never closes)
    /status/N       answers N with a short body, then closes
    /badaccept      answers 101 with a wrong Sec-WebSocket-Accept
    /silent         never answers
"""
import asyncio
import base64
import hashlib
import os
import ssl
import sys
import threading

import websockets

last_close = ["none"]
closes = {}


async def handler(ws, path=None):
    path = path if path is not None else ws.path
    try:
        if path == "/echo" or path.startswith("/echo/"):
            try:
                async for msg in ws:
                    await ws.send(msg)
            finally:
                said = "%s %s" % (ws.close_code, ws.close_reason)
                if path == "/echo":
                    last_close[0] = said
                else:
                    closes[path[len("/echo/"):]] = said
        elif path == "/fragments":
            async for msg in ws:
                n, size = (int(x) for x in msg.split(","))
                await ws.send(("%d" % (i % 10)) * size for i in range(n))
        elif path.startswith("/big/"):
            await ws.send(b"x" * int(path[5:]))
            async for msg in ws:
                await ws.send(msg)
        elif path.startswith("/close/"):
            _, _, code, reason = path.split("/", 3)
            await ws.close(int(code), reason)
        elif path == "/serverping":
            waiter = await ws.ping(b"hi")
            await asyncio.wait_for(waiter, 5)
            await ws.send("pong received")
            async for msg in ws:
                await ws.send(msg)
        elif path == "/lastclose" or path.startswith("/lastclose/"):
            if path == "/lastclose":
                await ws.send(last_close[0])
            else:
                await ws.send(closes.get(path[len("/lastclose/"):], "none"))
            async for msg in ws:
                pass
    except websockets.ConnectionClosed:
        pass


def accept_of(key):
    return base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


async def raw(reader, writer):
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        key = ""
        for line in lines[1:]:
            if line.lower().startswith("sec-websocket-key:"):
                key = line.split(":", 1)[1].strip()
        if path == "/noclose" or path == "/badaccept":
            accept = accept_of(key) if path == "/noclose" else "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n"
                          % accept).encode())
            await writer.drain()
            while await reader.read(65536):
                pass
            await asyncio.sleep(30)
        elif path == "/silent":
            await asyncio.sleep(60)
        elif path.startswith("/status/"):
            code = int(path[8:])
            writer.write(("HTTP/1.1 %d Nope\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
                          "nope" % code).encode())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def watchdog(pid):
    """Exits once the process that started us is gone (a spec run that crashed)."""
    import time
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)
        time.sleep(1)


async def main(port_file, tls):
    servers = {}
    plain = await websockets.serve(handler, "127.0.0.1", 0, max_size=None)
    servers["plain"] = plain.sockets[0].getsockname()[1]
    rawsrv = await asyncio.start_server(raw, "127.0.0.1", 0)
    servers["raw"] = rawsrv.sockets[0].getsockname()[1]
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        secure = await websockets.serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=None)
        servers["tls"] = secure.sockets[0].getsockname()[1]
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            for name, port in servers.items():
                f.write("%s %d\n" % (name, port))
        os.rename(port_file + ".tmp", port_file)
    await asyncio.Future()


if __name__ == "__main__":
    argv = sys.argv
    port_file = pid_file = tls = watch = None
    i = 1
    while i < len(argv):
        if argv[i] == "--port-file":
            port_file = argv[i + 1]; i += 2
        elif argv[i] == "--pid-file":
            pid_file = argv[i + 1]; i += 2
        elif argv[i] == "--watch-pid":
            watch = int(argv[i + 1]); i += 2
        elif argv[i] == "--tls":
            tls = (argv[i + 1], argv[i + 2]); i += 3
        else:
            sys.exit(__doc__)
    if pid_file:
        with open(pid_file, "w") as f:
            f.write("%d\n" % os.getpid())
    if watch:
        threading.Thread(target=watchdog, args=(watch,), daemon=True).start()
    asyncio.run(main(port_file, tls))
