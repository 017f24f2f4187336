"""WebSocket test client for spec/websocket_server_spec.lua (luarun's req:websocket),
on Python's websockets package (Debian's 10.4), plus a raw-socket mode.

    wsclient.py steps URL      stdin: {"subprotocols": [...], "max_size": n,
                                       "steps": [step, ...]}
    wsclient.py many URL       stdin: {"clients": n, "messages": m}
    wsclient.py raw PORT PATH  stdin: {"frames_hex": [...], "gap": seconds}

Prints one JSON object a line. "steps" prints {"event": "open", "subprotocol": p}
(or {"event": "refused", "error": ...}), then one line per step, then
{"event": "end", "close_code": c, "close_reason": r}. Steps:

    {"send": "text"}               a text message
    {"send_hex": "00ff"}           a binary message
    {"send_pattern": n, "binary": b}   n bytes of a fixed pattern (text when not b)
    {"send_frags": ["a", "b"]}     one text message sent as these fragments
    {"recv": true}                 -> {"msg": text or hex, "kind": "text"|"binary"}
                                      or {"closed": true, "code": c, "reason": r}
    {"recv_pattern": n}            -> {"ok": the message is the n-byte pattern, "len": l}
    {"ping": "data"}               -> {"pong": true} once the pong is in (5 s bound)
    {"close": [code, reason]}      the close handshake -> {"code": c, "reason": r}
    {"wait_closed": true}          until the server closes -> {"code": c, "reason": r}
    {"vanish": "abort"|"close"}    drops the TCP connection without a close frame
    {"sleep": seconds}

"many" runs n clients at once, each sending m messages "c<i>-m<j>" and checking each
echo; prints {"ok": clients that got every echo right, "errors": [...]}.

"raw" opens a socket, sends an upgrade for PATH and, once the 101 is in, the frames
given (bytes as hex, sent as they are: masking is the caller's; "gap" seconds apart
when given), then reads frames
until the server closes; prints {"status": s, "frames": [{"opcode", "payload_hex",
"masked"}], "close_code": c, "eof": the server closed the connection}.
"""
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time

import websockets

TIMEOUT = 20


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def pattern(n):
    unit = bytes(range(256))
    return (unit * (n // 256 + 1))[:n]


def text_pattern(n):
    unit = b"0123456789abcdefghijklmnopqrstuvwxyz"
    return (unit * (n // len(unit) + 1))[:n].decode()


def show(msg):
    if isinstance(msg, bytes):
        return {"msg": msg.hex(), "kind": "binary"}
    return {"msg": msg, "kind": "text"}


async def steps(url, spec):
    try:
        ws = await asyncio.wait_for(websockets.connect(
            url, subprotocols=spec.get("subprotocols"),
            max_size=spec.get("max_size", 2 ** 24), ping_interval=None,
            close_timeout=5), TIMEOUT)
    except Exception as e:  # the handshake failed
        out({"event": "refused", "error": "%s: %s" % (type(e).__name__, e)})
        return
    out({"event": "open", "subprotocol": ws.subprotocol})
    for st in spec.get("steps", []):
        try:
            if "send" in st:
                await ws.send(st["send"])
                out({"sent": True})
            elif "send_hex" in st:
                await ws.send(bytes.fromhex(st["send_hex"]))
                out({"sent": True})
            elif "send_pattern" in st:
                n = st["send_pattern"]
                await ws.send(pattern(n) if st.get("binary") else text_pattern(n))
                out({"sent": True})
            elif "send_frags" in st:
                await ws.send(iter(st["send_frags"]))
                out({"sent": True})
            elif "recv" in st:
                try:
                    msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
                    out(show(msg))
                except websockets.ConnectionClosed as e:
                    out({"closed": True, "code": e.rcvd.code if e.rcvd else None,
                         "reason": e.rcvd.reason if e.rcvd else None,
                         "close_code": ws.close_code})
            elif "recv_pattern" in st:
                n = st["recv_pattern"]
                msg = await asyncio.wait_for(ws.recv(), TIMEOUT)
                want = pattern(n) if isinstance(msg, bytes) else text_pattern(n)
                out({"ok": msg == want, "len": len(msg),
                     "kind": "binary" if isinstance(msg, bytes) else "text"})
            elif "ping" in st:
                waiter = await ws.ping(st["ping"])
                await asyncio.wait_for(waiter, 5)
                out({"pong": True})
            elif "close" in st:
                code, reason = st["close"]
                await asyncio.wait_for(ws.close(code, reason), TIMEOUT)
                out({"code": ws.close_code, "reason": ws.close_reason})
            elif "wait_closed" in st:
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                out({"code": ws.close_code, "reason": ws.close_reason})
            elif "vanish" in st:
                if st["vanish"] == "abort":
                    ws.transport.abort()
                else:
                    ws.transport.close()
                out({"vanished": True})
                return
            elif "sleep" in st:
                await asyncio.sleep(st["sleep"])
                out({"slept": True})
        except Exception as e:
            out({"error": "%s: %s" % (type(e).__name__, e)})
    out({"event": "end", "close_code": ws.close_code, "close_reason": ws.close_reason})
    await ws.close()


async def many(url, spec):
    n, m = spec["clients"], spec["messages"]
    errors = []

    async def one(i):
        async with websockets.connect(url, ping_interval=None, close_timeout=5) as ws:
            for j in range(m):
                text = "c%d-m%d" % (i, j)
                await ws.send(text if j % 2 == 0 else text.encode())
                got = await asyncio.wait_for(ws.recv(), TIMEOUT)
                if got != (text if j % 2 == 0 else text.encode()):
                    raise ValueError("client %d message %d: got %r" % (i, j, got))
        return True

    results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    for r in results:
        if r is not True:
            errors.append("%s: %s" % (type(r).__name__, r))
    out({"ok": sum(1 for r in results if r is True), "errors": errors[:5]})


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        piece = sock.recv(n - len(buf))
        if not piece:
            raise EOFError
        buf += piece
    return buf


def raw(port, path, spec):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    head = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            "\r\n" % (path, port, key))
    sock.sendall(head.encode())
    resp = b""
    while b"\r\n\r\n" not in resp:
        piece = sock.recv(4096)
        if not piece:
            break
        resp += piece
    head, _, rest = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1]) if head else None
    result = {"status": status, "frames": [], "close_code": None, "eof": False}
    for i, h in enumerate(spec.get("frames_hex", [])):
        if i and spec.get("gap"):
            time.sleep(spec["gap"])
        sock.sendall(bytes.fromhex(h))
    buf = rest
    deadline = time.monotonic() + 10

    def need(n):
        nonlocal buf
        while len(buf) < n:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            piece = sock.recv(65536)
            if not piece:
                raise EOFError
            buf += piece
        data, buf = buf[:n], buf[n:]
        return data

    try:
        while time.monotonic() < deadline:
            b0, b1 = need(2)
            ln = b1 & 0x7F
            if ln == 126:
                ln = struct.unpack("!H", need(2))[0]
            elif ln == 127:
                ln = struct.unpack("!Q", need(8))[0]
            mask = need(4) if b1 & 0x80 else None
            payload = need(ln)
            if mask:
                payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
            op = b0 & 0x0F
            result["frames"].append({"opcode": op, "payload_hex": payload.hex(),
                                     "masked": mask is not None})
            if op == 8:
                if len(payload) >= 2:
                    result["close_code"] = struct.unpack("!H", payload[:2])[0]
                # answer the close, as a client would, then wait for the end
                reply = bytes([0x88, 0x80 | min(len(payload), 2)]) + b"\0\0\0\0" + payload[:2]
                try:
                    sock.sendall(reply)
                except OSError:
                    pass
    except EOFError:
        result["eof"] = True
    except (ConnectionResetError, BrokenPipeError):
        result["eof"] = True
    except socket.timeout:
        pass
    sock.close()
    out(result)


def main():
    mode = sys.argv[1]
    spec = json.loads(sys.stdin.read() or "{}")
    if mode == "steps":
        asyncio.run(steps(sys.argv[2], spec))
    elif mode == "many":
        asyncio.run(many(sys.argv[2], spec))
    elif mode == "raw":
        raw(int(sys.argv[2]), sys.argv[3], spec)
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
