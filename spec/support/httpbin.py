#!/usr/bin/python3
"""A local test server in the manner of httpbin, for spec/http_spec.lua and the demo.

    httpbin.py [--port-file F] [--pid-file F] [--tls CERT KEY] [--port N] [--watch-pid P]

Binds 127.0.0.1 (an ephemeral port unless --port), writes the port to --port-file
(atomically) and its pid to --pid-file, then serves until killed (or until process
P, given by --watch-pid, is gone). Threaded (one
daemon thread per connection), HTTP/1.1 with keep-alive. Endpoints:

  /get /anything[/...]   echo method, path, args, headers, body, form, json
  /headers               the request headers
  /delay/S               answers after S seconds (float)
  /status/N              that status, empty body
  /bytes/N               N bytes (i % 256)
  /large?size=N          N bytes of 'x', sent in 64 KiB writes
  /redirect/N            N redirects (302) ending at /get
  /redirect-to?url=U&status_code=C
  /response-headers?k=v  those headers (repeat a key to repeat the header)
  /gzip                  a gzip-encoded JSON body
  /stream/N              N JSON lines, chunked
  /drip?duration=S&numbytes=N   N bytes spread over S seconds
  /close-mid-body        promises 1000 bytes, sends 100, closes
  /malformed             a reply that is not HTTP
  /hang                  reads the request and never answers (closes after 60 s)
  /close-idle            answers as if keeping the connection alive, then closes it
  /close-on-next         answers, then reads the next request on this connection and
                         closes it unanswered (a keep-alive connection that died)
  /json, /invalid-json   a JSON document / text that is not JSON
  /basic-auth/U/P        200 with the right credentials, else 401
  /stats                 {"connections": accepted so far, "requests": served so far}
  /links/N/I             an HTML page linking to /links/N/0 .. N-1 (but I)
  /cookies               {"cookies": {name: value}} from the Cookie header
  /cookies/set?k=v       Set-Cookie k=v (Path=/) for each pair, then 302 to /cookies
  /flaky?id=X&fail=N&status=S&retry_after=R
                         the first N requests with id X get status S (default 503),
                         with Retry-After: R if given; later ones 200 {"attempt": k}
  /stamp?id=X            records when it arrived under id X; 200 {"n": count so far}
  /stamps?id=X           {"times": [...]}: the arrival times (server's monotonic clock,
                         seconds) of /flaky and /stamp requests with id X
"""
import gzip
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS = {"connections": 0, "requests": 0}
LOCK = threading.Lock()
STAMPS = {}  # id -> arrival times of /flaky and /stamp requests


def stamp(key):
    """Records an arrival under key; returns how many there have been."""
    now = time.monotonic()
    with LOCK:
        times = STAMPS.setdefault(key, [])
        times.append(now)
        return len(times)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 4096


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpbin.py"
    timeout = 120  # an idle keep-alive connection is dropped after this

    def setup(self):
        with LOCK:
            STATS["connections"] += 1
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    # ---- helpers ----
    def body_bytes(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def send(self, status, body=b"", ctype="application/json", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, obj, status=200, headers=()):
        self.send(status, json.dumps(obj), headers=headers)

    def echo(self):
        u = urllib.parse.urlsplit(self.path)
        raw = self.body_bytes()
        ctype = self.headers.get("Content-Type", "")
        form, js = {}, None
        if ctype.startswith("application/x-www-form-urlencoded"):
            form = {k: v if len(v) > 1 else v[0]
                    for k, v in urllib.parse.parse_qs(raw.decode(), keep_blank_values=True).items()}
        elif ctype.startswith("application/json"):
            try:
                js = json.loads(raw)
            except ValueError:
                js = None
        args = {k: v if len(v) > 1 else v[0]
                for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        return {
            "method": self.command,
            "http_version": self.request_version,
            "path": u.path,
            "query": u.query,
            "args": args,
            "headers": {k: v for k, v in self.headers.items()},
            "header_list": [[k, v] for k, v in self.headers.items()],
            "body": raw.decode("latin-1"),
            "form": form,
            "json": js,
        }

    # ---- dispatch ----
    def handle_any(self):
        with LOCK:
            STATS["requests"] += 1
        if getattr(self, "drop_next", False):
            self.body_bytes()
            self.close_connection = True
            return None
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        parts = [p for p in u.path.split("/") if p]
        name = parts[0] if parts else ""
        arg = parts[1] if len(parts) > 1 else None
        if name in ("get", "anything", "post", "put", "delete", "patch"):
            return self.send_json(self.echo())
        if name == "headers":
            self.body_bytes()
            return self.send_json({"headers": {k: v for k, v in self.headers.items()}})
        if name == "delay":
            self.body_bytes()
            time.sleep(min(float(arg or 0), 60))
            return self.send_json({"delay": float(arg or 0)})
        if name == "status":
            self.body_bytes()
            code = int(arg)
            hdrs = [("Location", "/get")] if 300 <= code < 400 else []
            return self.send(code, b"", "text/plain", hdrs)
        if name == "bytes":
            n = int(arg)
            return self.send(200, bytes(i % 256 for i in range(n)), "application/octet-stream")
        if name == "large":
            n = int(q.get("size", ["1048576"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            chunk = b"x" * 65536
            while n > 0:
                k = min(n, len(chunk))
                self.wfile.write(chunk[:k])
                n -= k
            return None
        if name == "redirect":
            self.body_bytes()
            n = int(arg)
            loc = "/get" if n <= 1 else "/redirect/%d" % (n - 1)
            return self.send(302, b"", "text/plain", [("Location", loc)])
        if name == "redirect-to":
            self.body_bytes()
            code = int(q.get("status_code", ["302"])[0])
            return self.send(code, b"", "text/plain", [("Location", q["url"][0])])
        if name == "response-headers":
            hdrs = [(k, v) for k, vs in q.items() for v in vs]
            return self.send_json({k: v for k, v in hdrs}, headers=hdrs)
        if name == "gzip":
            body = gzip.compress(json.dumps({"gzipped": True, "method": self.command}).encode())
            return self.send(200, body, headers=[("Content-Encoding", "gzip")])
        if name == "stream":
            n = int(arg)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                line = (json.dumps({"id": i}) + "\n").encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return None
        if name == "drip":
            duration = float(q.get("duration", ["1"])[0])
            n = int(q.get("numbytes", ["10"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for _ in range(n):
                self.wfile.write(b"*")
                self.wfile.flush()
                time.sleep(duration / n)
            return None
        if name == "close-mid-body":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"y" * 100)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        if name == "malformed":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
            return None
        if name == "hang":
            time.sleep(60)
            self.close_connection = True
            return None
        if name == "close-idle":
            self.body_bytes()
            self.send_json({"ok": True})
            self.wfile.flush()
            self.close_connection = True
            return None
        if name == "close-on-next":
            self.body_bytes()
            self.drop_next = True
            return self.send_json({"ok": True})
        if name == "json":
            return self.send_json({"a": 1, "b": [1, 2, 3], "c": "d"})
        if name == "invalid-json":
            return self.send(200, "{not json", "application/json")
        if name == "basic-auth":
            import base64
            want = "Basic " + base64.b64encode(("%s:%s" % (parts[1], parts[2])).encode()).decode()
            if self.headers.get("Authorization") == want:
                return self.send_json({"authenticated": True, "user": parts[1]})
            return self.send(401, b"", "text/plain", [("WWW-Authenticate", 'Basic realm="x"')])
        if name == "cookies":
            self.body_bytes()
            if arg == "set":
                hdrs = [("Set-Cookie", "%s=%s; Path=/" % (k, v)) for k, vs in q.items() for v in vs]
                return self.send(302, b"", "text/plain", hdrs + [("Location", "/cookies")])
            jar = {}
            for part in (self.headers.get("Cookie") or "").split(";"):
                if "=" in part:
                    k, v = part.strip().split("=", 1)
                    jar[k] = v
            return self.send_json({"cookies": jar})
        if name == "flaky":
            body = self.body_bytes().decode("latin-1")
            n = stamp(q.get("id", [""])[0])
            if n <= int(q.get("fail", ["1"])[0]):
                hdrs = [("Retry-After", q["retry_after"][0])] if "retry_after" in q else []
                return self.send_json({"attempt": n, "body": body},
                                      int(q.get("status", ["503"])[0]), hdrs)
            return self.send_json({"attempt": n, "body": body})
        if name == "stamp":
            self.body_bytes()
            return self.send_json({"n": stamp(q.get("id", [""])[0])})
        if name == "stamps":
            with LOCK:
                times = list(STAMPS.get(q.get("id", [""])[0], []))
            return self.send_json({"times": times})
        if name == "stats":
            with LOCK:
                return self.send_json(dict(STATS))
        if name == "links":
            # /links/N/I: an HTML page linking to every page /links/N/0..N-1 but itself
            # (a small site for crawler examples, as httpbin.org's /links).
            self.body_bytes()
            n, me = int(arg), int(parts[2]) if len(parts) > 2 else 0
            links = "".join('<a href="/links/%d/%d">%d</a> ' % (n, i, i)
                            for i in range(n) if i != me)
            page = "<html><head><title>Links</title></head><body>%s</body></html>" % links
            return self.send(200, page.encode(), "text/html")
        self.body_bytes()
        return self.send_json({"error": "not found", "path": u.path}, status=404)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (ConnectionError, BrokenPipeError, socket.timeout, ssl.SSLError):
            self.close_connection = True


def main(argv):
    port_file = pid_file = None
    tls = None
    port = 0
    watch = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--port-file":
            port_file = argv[i + 1]; i += 2
        elif a == "--pid-file":
            pid_file = argv[i + 1]; i += 2
        elif a == "--port":
            port = int(argv[i + 1]); i += 2
        elif a == "--watch-pid":
            watch = int(argv[i + 1]); i += 2
        elif a == "--tls":
            tls = (argv[i + 1], argv[i + 2]); i += 3
        else:
            sys.exit("usage: httpbin.py [--port-file F] [--pid-file F] [--port N] [--tls CERT KEY]")
    threading.stack_size(512 * 1024)  # many connections at once, little stack each
    srv = Server(("127.0.0.1", port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
    if pid_file:
        with open(pid_file, "w") as f:
            f.write("%d\n" % os.getpid())
    actual = srv.server_address[1]
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write("%d\n" % actual)
        os.rename(port_file + ".tmp", port_file)
    print(actual, flush=True)
    if watch:
        threading.Thread(target=watchdog, args=(watch,), daemon=True).start()
    srv.serve_forever()


def watchdog(pid):
    """Exits once the process that started us is gone (a spec run that crashed)."""
    while True:
        time.sleep(1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)


if __name__ == "__main__":
    main(sys.argv)
