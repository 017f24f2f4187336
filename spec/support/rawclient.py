#!/usr/bin/python3
"""Raw-socket HTTP/1.1 clients for the server specs (standard library only).

    rawclient.py MODE PORT  < JSON arguments     -> one JSON document on stdout

Every socket connects to 127.0.0.1:PORT. Byte strings travel in JSON as latin-1
text (each character one byte). Modes:

  cases       a list of {send: [part, ...], gap: s, shut: bool, timeout: s,
              responses: n, head: bool}: each on its own connection, one after the
              other. The parts are written with `gap` seconds between them; `shut`
              shuts the write side afterwards; then reads until EOF, until `responses`
              complete responses were parsed, or `timeout` seconds of silence.
              Result per case: {data, closed (EOF seen), reset, responses: [{status,
              headers, body}], error (framing), elapsed}.
  concurrent  {n, path, hold}: n connections at once (asyncio), each GET path?i=I,
              Connection: close; result {elapsed, answers: {I: body}, errors: [...]}.
  slowloris   {n, silent, duration, probes, header_timeout}: n connections dripping a
              request head one byte a second plus `silent` that send nothing, while a
              probe client makes `probes` requests (fresh connection each) spread
              over `duration` seconds; then waits for the drippers to be answered.
  slowread    {path, rate, pid}: GET path, then reads the chunked body at `rate`
              bytes a second, sampling VmRSS of process `pid` as it goes; result
              {status, body_len, max_rss_kb, first_rss_kb, elapsed, error}.
  fuzz        {seed, count, concurrency, deadline}: seeded random and mutated
              requests (see gen_case); result {cases, answered, closed, bad: [...]}.
"""
import asyncio
import json
import random
import resource
import socket
import struct
import sys
import time

HOST = "127.0.0.1"


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def b2s(b):
    return b.decode("latin-1")


def s2b(s):
    return s.encode("latin-1")


# ---- parsing responses ----

class Incomplete(Exception):
    pass


class Malformed(Exception):
    pass


def parse_one(buf, pos, head_request, eof):
    """Parses the response at buf[pos:]; returns (response dict, new pos). Raises
    Incomplete when more bytes are needed and Malformed when it is not HTTP."""
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        if len(buf) - pos > 65536:
            raise Malformed("a response head longer than 64 KiB")
        if eof and len(buf) > pos:
            raise Malformed("the connection closed inside a response head: %r" % buf[pos:pos + 200])
        raise Incomplete()
    lines = buf[pos:end].split(b"\r\n")
    status_line = lines[0]
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or \
            len(parts[1]) != 3 or not parts[1].isdigit():
        raise Malformed("bad status line %r" % status_line)
    status = int(parts[1])
    headers = []
    for line in lines[1:]:
        if b":" not in line:
            raise Malformed("bad header line %r" % line)
        name, value = line.split(b":", 1)
        if not name or name != name.strip() or b" " in name:
            raise Malformed("bad header name %r" % line)
        headers.append([b2s(name.lower()), b2s(value.strip())])
    hd = {}
    for k, v in headers:
        hd[k] = v if k not in hd else hd[k] + ", " + v
    pos = end + 4
    body = b""
    if status == 101:  # what follows is the upgraded protocol's
        return {"status": status, "headers": hd, "body": b2s(buf[pos:pos + 200])}, len(buf)
    if 100 <= status < 200:
        return {"status": status, "headers": hd, "body": "", "interim": True}, pos
    no_body = head_request or status in (204, 304)
    # A mangled request line may be taken for HEAD by the server and not by the
    # client (or the other way round): the last answer, an error with connection:
    # close, is then fine with or without its body.
    if eof and status >= 400 and hd.get("connection") == "close" and "content-length" in hd:
        rest = len(buf) - pos
        if rest == 0:
            no_body = True
        elif rest == int(hd["content-length"]):
            no_body = False
    if no_body:
        pass
    elif "transfer-encoding" in hd:
        if hd["transfer-encoding"].lower() != "chunked":
            raise Malformed("transfer-encoding %r" % hd["transfer-encoding"])
        if "content-length" in hd:
            raise Malformed("both content-length and chunked")
        chunks = []
        while True:
            le = buf.find(b"\r\n", pos)
            if le < 0:
                if eof:
                    raise Malformed("the connection closed inside a chunk size")
                raise Incomplete()
            size_s = buf[pos:le].split(b";")[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise Malformed("bad chunk size %r" % buf[pos:le])
            pos = le + 2
            if size == 0:
                if buf[pos:pos + 2] == b"\r\n":
                    pos += 2
                    break
                if len(buf) - pos < 2:
                    if eof:
                        raise Malformed("the connection closed before the last CRLF")
                    raise Incomplete()
                raise Malformed("trailers or junk after the last chunk: %r" % buf[pos:pos + 50])
            if len(buf) < pos + size + 2:
                if eof:
                    raise Malformed("the connection closed inside a chunk")
                raise Incomplete()
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise Malformed("no CRLF after a chunk")
            chunks.append(buf[pos:pos + size])
            pos += size + 2
        body = b"".join(chunks)
    elif "content-length" in hd:
        try:
            n = int(hd["content-length"])
        except ValueError:
            raise Malformed("content-length %r" % hd["content-length"])
        if len(buf) < pos + n:
            if eof:
                raise Malformed("the connection closed inside a body (%d of %d)" % (len(buf) - pos, n))
            raise Incomplete()
        body = buf[pos:pos + n]
        pos += n
    else:
        # Close-delimited: only valid when the server closes.
        if not eof:
            raise Incomplete()
        body = buf[pos:]
        pos = len(buf)
    return {"status": status, "headers": hd, "body": b2s(body)}, pos


def parse_all(buf, head_request=False, eof=False):
    """Every complete response in buf (1xx included, flagged interim); returns
    (responses, error or None, complete: whether buf ends at a response boundary)."""
    out, pos = [], 0
    while pos < len(buf):
        try:
            r, pos = parse_one(buf, pos, head_request, eof)
        except Incomplete:
            return out, None, False
        except Malformed as e:
            return out, str(e), False
        out.append(r)
    return out, None, True


def finals(responses):
    return [r for r in responses if not r.get("interim")]


# ---- mode: cases ----

def run_case(port, case):
    t0 = time.monotonic()
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reset = False
    data = b""
    try:
        parts = case.get("send", [])
        for i, p in enumerate(parts):
            if i > 0 and case.get("gap"):
                time.sleep(case["gap"])
            try:
                s.sendall(s2b(p))
            except (BrokenPipeError, ConnectionResetError):
                reset = True
                break
        if case.get("shut") and not reset:
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        want = case.get("responses")
        s.settimeout(case.get("timeout", 5))
        closed = False
        while True:
            if want:
                rs, err, _ = parse_all(data, case.get("head", False))
                if err or len(finals(rs)) >= want:
                    break
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                reset = True
                closed = True
                break
            if not d:
                closed = True
                break
            data += d
    finally:
        if case.get("reset"):  # close with RST, not FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    rs, err, complete = parse_all(data, case.get("head", False), eof=closed)
    return {"data": b2s(data[:200000]), "closed": closed, "reset": reset,
            "responses": rs, "error": err, "complete": complete,
            "elapsed": time.monotonic() - t0}


def mode_cases(port, arg):
    return [run_case(port, c) for c in arg]


# ---- mode: concurrent ----

async def one_get(port, path, i, timeout):
    r, w = await asyncio.open_connection(HOST, port)
    sep = "&" if "?" in path else "?"
    w.write(("GET %s%si=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % (path, sep, i)).encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), timeout)
    w.close()
    rs, err, _ = parse_all(data, eof=True)
    if err or len(rs) != 1:
        raise RuntimeError("request %d: %s %r" % (i, err, data[:200]))
    return rs[0]


async def concurrent(port, arg):
    n, path = arg["n"], arg.get("path", "/")
    t0 = time.monotonic()
    results = await asyncio.gather(*[one_get(port, path, i, arg.get("timeout", 20))
                                     for i in range(n)], return_exceptions=True)
    elapsed = time.monotonic() - t0
    answers, errors = {}, []
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            errors.append("%d: %r" % (i, r))
        elif r["status"] != 200:
            errors.append("%d: status %d" % (i, r["status"]))
        else:
            answers[str(i)] = r["body"]
    return {"elapsed": elapsed, "answers": answers, "errors": errors[:20], "nerrors": len(errors)}


# ---- mode: slowloris ----

async def dripper(port, text, state, idx):
    t0 = time.monotonic()
    try:
        r, w = await asyncio.open_connection(HOST, port)
    except OSError as e:
        state[idx] = {"how": "connect failed %r" % e, "at": 0}
        return
    got = b""
    i = 0
    reader = asyncio.ensure_future(r.read())
    try:
        while not reader.done() and i < len(text):
            w.write(text[i:i + 1])
            i += 1
            try:
                await w.drain()
            except OSError:
                break
            await asyncio.wait([reader], timeout=1.0)
        got = await asyncio.wait_for(reader, 30)
        how = "answered" if got else "closed"
    except (ConnectionResetError, BrokenPipeError):
        how = "reset"
    except asyncio.TimeoutError:
        how = "open"
    w.close()
    state[idx] = {"how": how, "at": time.monotonic() - t0, "data": b2s(got[:300]), "sent": i}


async def silent(port, state, idx):
    t0 = time.monotonic()
    r, w = await asyncio.open_connection(HOST, port)
    try:
        got = await asyncio.wait_for(r.read(), 30)
        how = "answered" if got else "closed"
    except ConnectionResetError:
        got, how = b"", "reset"
    except asyncio.TimeoutError:
        got, how = b"", "open"
    w.close()
    state[idx] = {"how": how, "at": time.monotonic() - t0, "data": b2s(got[:300])}


async def probe(port, i):
    t0 = time.monotonic()
    r, w = await asyncio.open_connection(HOST, port)
    w.write(("GET /probe?i=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % i).encode())
    await w.drain()
    data = await asyncio.wait_for(r.read(), 10)
    w.close()
    rs, err, _ = parse_all(data, eof=True)
    ok = not err and len(rs) == 1 and rs[0]["status"] == 200 and rs[0]["body"] == "probe %d" % i
    return {"ok": ok, "ms": (time.monotonic() - t0) * 1000, "data": b2s(data[:200])}


async def slowloris(port, arg):
    n, nsilent = arg["n"], arg.get("silent", 0)
    text = b"GET /drip HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    state = [None] * (n + nsilent)
    tasks = [asyncio.ensure_future(dripper(port, text, state, i)) for i in range(n)]
    tasks += [asyncio.ensure_future(silent(port, state, n + i)) for i in range(nsilent)]
    await asyncio.sleep(0.3)  # every dripper connected and sent its first byte
    t_open = time.monotonic()
    probes = []
    gap = arg["duration"] / arg["probes"]
    for i in range(arg["probes"]):
        probes.append(await probe(port, i))
        await asyncio.sleep(gap)
    probe_window = time.monotonic() - t_open
    open_during = sum(1 for s in state if s is None)
    await asyncio.wait(tasks, timeout=arg.get("wait", 30))
    return {"probes": probes, "drippers": state, "open_during_probes": open_during,
            "probe_window": probe_window}


# ---- mode: slowread ----

def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def slowread(port, arg):
    t0 = time.monotonic()
    s = socket.create_connection((HOST, port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % arg["path"]).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            return {"error": "closed in the head"}
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ")[1])
    chunked = b"transfer-encoding: chunked" in head.lower()
    first = rss_kb(arg["pid"])
    max_rss = first
    rate = arg["rate"]
    body_len, pending, done, error = 0, rest, False, None
    tick = time.monotonic()
    got_since = 0
    while not done:
        # decode what is pending
        while True:
            le = pending.find(b"\r\n")
            if le < 0:
                break
            size = int(pending[:le].split(b";")[0], 16)
            if len(pending) < le + 2 + size + 2:
                break
            if pending[le + 2 + size:le + 4 + size] != b"\r\n":
                error = "bad chunk framing"
                done = True
                break
            body_len += size
            pending = pending[le + 4 + size:]
            if size == 0:
                done = True
                break
        if done:
            break
        d = s.recv(16384)
        if not d:
            error = "closed after %d body bytes" % body_len
            break
        pending += d
        got_since += len(d)
        if got_since >= rate / 20:  # pace: rate bytes a second, 20 steps a second
            now = time.monotonic()
            wait = got_since / rate - (now - tick)
            if wait > 0:
                time.sleep(wait)
            tick, got_since = time.monotonic(), 0
            max_rss = max(max_rss, rss_kb(arg["pid"]))
    s.close()
    return {"status": status, "chunked": chunked, "body_len": body_len, "max_rss_kb": max_rss,
            "first_rss_kb": first, "elapsed": time.monotonic() - t0, "error": error}


# ---- mode: fuzz ----

BASES = [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /echo?a=1&b=%20x&a=2 HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n",
    b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
    b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
    b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"a\":[1,2,\"x\"]}\r\n",
    b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 15\r\n\r\na=1&b=two+3&a=4",
    b"PUT /body HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
    b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET /echo HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\nX-Long: "
    + b"v" * 300 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?p=2 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /body HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
]

TOKENS = [b"\r\n", b"\n", b"\r", b":", b" ", b"\t", b"\0", b"%", b"%zz", b"?", b"#", b"/",
          b"chunked", b"99999999999999999999", b"-1", b"0x10", b"ffffffffffffffff",
          b"Transfer-Encoding: chunked\r\n", b"Content-Length: 5\r\n",
          b"Content-Length: 100000000000\r\n", b"Expect: 100-continue\r\n",
          b"Expect: nonsense\r\n", b" folded\r\n", b"HTTP/1.1", b"HTTP/9.9", b"\xff\xfe",
          b"Connection: close\r\n", b"Connection: keep-alive\r\n", b"\r\n\r\n",
          b"GET / HTTP/1.1\r\n\r\n", b"Upgrade: h2c\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]


def chunked_body(rng, data):
    out = b""
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max(1, len(data) - pos))
        size = b"%x" % n
        style = rng.random()
        if style < 0.2:
            size = size.upper()
        elif style < 0.3:
            size = b"000" + size
        elif style < 0.4:
            size += b";name=value"
        elif style < 0.45:
            size += b" "
        out += size + b"\r\n" + data[pos:pos + n] + b"\r\n"
        pos += n
    out += b"0\r\n"
    if rng.random() < 0.2:
        out += b"X-Trailer: t\r\n"
    return out + b"\r\n"


def gen_case(rng):
    """One fuzz case: (bytes to send, list of split points)."""
    kind = rng.random()
    if kind < 0.08:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    elif kind < 0.22:
        body = bytes(rng.randrange(32, 127) for _ in range(rng.randint(0, 3000)))
        data = (b"POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                chunked_body(rng, body))
        if rng.random() < 0.5:
            data = mutate(rng, data, rng.randint(1, 3))
    elif kind < 0.30:
        # long lines: URL, header name, header value, many headers
        which = rng.randrange(4)
        n = rng.choice([100, 1000, 8000, 16000, 17000, 40000])
        if which == 0:
            data = b"GET /" + b"a" * n + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        elif which == 1:
            data = b"GET / HTTP/1.1\r\n" + b"X" * n + b": v\r\n\r\n"
        elif which == 2:
            data = b"GET / HTTP/1.1\r\nX-Big: " + b"v" * n + b"\r\n\r\n"
        else:
            data = b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(n // 100)) + b"\r\n"
    else:
        data = mutate(rng, rng.choice(BASES), rng.randint(1, 4))
    splits = []
    if rng.random() < 0.6 and len(data) > 1:
        splits = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 6))))
    return data, splits


def mutate(rng, data, times):
    data = bytearray(data)
    for _ in range(times):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:  # flip a bit
            p = rng.randrange(len(data))
            data[p] ^= 1 << rng.randrange(8)
        elif op == 1:  # insert random bytes
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and data:  # delete a slice
            data[pos:pos + rng.randint(1, 12)] = b""
        elif op == 3:  # insert a token
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 4 and data:  # duplicate a slice
            a = rng.randrange(len(data))
            data[pos:pos] = data[a:a + rng.randint(1, 40)]
        elif op == 5 and data:  # replace a byte with a special one
            p = rng.randrange(len(data))
            data[p] = rng.choice(b"\r\n :\t\0\x7f\x80%")
        else:  # truncate
            data = data[:pos]
    return bytes(data)


async def fuzz_one(port, data, splits, rng_delay, deadline):
    """Sends one case; returns (outcome, detail). outcome: answered | closed | bad."""
    try:
        r, w = await asyncio.open_connection(HOST, port)
    except OSError as e:
        return "bad", "connect: %r" % e
    head = data.startswith(b"HEAD ")
    got = b""
    eof = False
    try:
        prev = 0
        for p in splits + [len(data)]:
            w.write(data[prev:p])
            prev = p
            try:
                await w.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
            if rng_delay:
                await asyncio.sleep(rng_delay)
        end = time.monotonic() + deadline
        while True:
            rs, err, complete = parse_all(got, head)
            if err:
                return "bad", "%s: %r" % (err, got[:300])
            f = finals(rs)
            if f and f[-1]["status"] == 101:
                break
            if f and complete and f[-1]["headers"].get("connection") != "close":
                break  # answered, and the connection stays open: fine
            left = end - time.monotonic()
            if left <= 0:
                return "bad", "no answer and no close after %.1f s: got %r" % (deadline, got[:300])
            try:
                d = await asyncio.wait_for(r.read(65536), left)
            except asyncio.TimeoutError:
                continue
            if not d:
                eof = True
                break
            got += d
    except (ConnectionResetError, BrokenPipeError):
        eof = True
    finally:
        w.close()
    rs, err, complete = parse_all(got, head, eof=eof)
    if err:
        return "bad", "%s: %r" % (err, got[:300])
    return ("answered" if finals(rs) else "closed"), [r["status"] for r in finals(rs)]


async def fuzz(port, arg):
    rng = random.Random(arg["seed"])
    cases = [gen_case(rng) for _ in range(arg["count"])]
    delays = [rng.choice([0, 0, 0, 0.001, 0.005]) for _ in cases]
    sem = asyncio.Semaphore(arg.get("concurrency", 50))
    stats = {"cases": len(cases), "answered": 0, "closed": 0, "bad": [], "statuses": {}}

    async def run(i):
        async with sem:
            data, splits = cases[i]
            how, detail = await fuzz_one(port, data, splits, delays[i], arg.get("deadline", 8))
            if how == "bad":
                stats["bad"].append({"case": i, "sent": b2s(data[:400]), "why": detail})
            else:
                stats[how] += 1
                for st in detail:
                    stats["statuses"][str(st)] = stats["statuses"].get(str(st), 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*[run(i) for i in range(len(cases))])
    stats["elapsed"] = time.monotonic() - t0
    stats["nbad"] = len(stats["bad"])
    stats["bad"] = stats["bad"][:10]
    return stats


def main():
    raise_nofile()
    mode, port = sys.argv[1], int(sys.argv[2])
    arg = json.loads(sys.stdin.read() or "null")
    if mode == "cases":
        out = mode_cases(port, arg)
    elif mode == "concurrent":
        out = asyncio.run(concurrent(port, arg))
    elif mode == "slowloris":
        out = asyncio.run(slowloris(port, arg))
    elif mode == "slowread":
        out = slowread(port, arg)
    elif mode == "fuzz":
        out = asyncio.run(fuzz(port, arg))
    else:
        raise SystemExit("unknown mode " + mode)
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
