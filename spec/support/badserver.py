#!/usr/bin/python3
"""A misbehaving HTTP server for spec/http_faults_spec.lua (standard library only).

    badserver.py --port-file F --pid-file F [--tls CERT KEY] [--watch-pid P]

Binds 127.0.0.1 on ephemeral ports and writes "name port" lines to --port-file
(atomically, once every port listens) and its pid to --pid-file. The ports:

  plain       HTTP; the fault is chosen by the request path (below)
  tls         the same over TLS (only with --tls)
  tls_stall   accepts, reads the ClientHello and never answers
  tls_close   accepts, reads the ClientHello and closes
  tls_reset   accepts, reads the ClientHello and resets the connection

Paths of the plain and tls ports (anything else is 404):

  /ok                    200 "ok", keep-alive: the good path
  /cut/status            the status line only, then close
  /cut/mid-header        "HTTP/1.1 200 OK\\r\\nContent-Type: te", then close
  /cut/after-header      the status line and one whole header line, then close
  /cut/no-blank-length   status line and a whole Content-Length: 0 line, then close
  /garbage-status        a status line that is not one ("HTTP/1.1 abc garbage")
  /not-http              a first line that is not HTTP at all
  /chunk/non-hex         chunked, with the chunk size "zz"
  /chunk/huge            chunked, with a size of 20 hex digits
  /chunk/negative        chunked, with the chunk size "-5"
  /chunk/truncated       chunked, a chunk of 16 bytes of which 3 come, then close
  /short-body            Content-Length: 1000, 10 bytes, then close
  /reset/before-headers  reads the request, then resets the connection (SO_LINGER 0)
  /reset/after-headers   sends the headers (Content-Length: 100), then resets
  /drip/headers          the status line, one byte a second
  /drip/body             headers (Content-Length: 100), then one body byte a second
  /hang                  reads the request and never answers
  /big-line?n=N          a header line of N bytes (default 10 MB)
  /many-headers?n=N&size=S   N header lines of S bytes each
  /close-delimited       a good response whose body ends when the connection closes
  /trailers              a chunked body with a trailer
  /redirect              302 to /ok

Every connection runs in a daemon thread; a thread that waits forever (hang,
stall) ends when the client closes its end. With --watch-pid the server exits once
that process is gone, so a crashed spec run leaves nothing behind.
"""
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

HEAD_MAX = 64 * 1024


def linger_reset(sock):
    """Closes with an RST rather than a FIN: SO_LINGER on, with a zero timeout."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def wait_for_eof(sock):
    """Holds the connection open, answering nothing, until the client closes it."""
    try:
        while sock.recv(65536):
            pass
    except (OSError, ssl.SSLError):
        pass


def read_request(sock, buf):
    """Reads one request head (and a Content-Length body). Returns (path, query,
    rest of buf) or None at EOF."""
    while b"\r\n\r\n" not in buf:
        if len(buf) > HEAD_MAX:
            return None
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip() or 0)
    while len(buf) < length:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
    buf = buf[length:]
    target = lines[0].split(" ")[1] if len(lines[0].split(" ")) > 1 else "/"
    u = urllib.parse.urlsplit(target)
    return u.path, urllib.parse.parse_qs(u.query), buf


def drip(sock, data):
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        time.sleep(1)


# Each fault: (sock, query) -> True to keep the connection for another request.
def f_ok(sock, q):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
    return True


def closes_after(data):
    def fault(sock, q):
        sock.sendall(data)
        return False
    return fault


def chunked(first_chunk_line):
    return closes_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                        first_chunk_line + b"\r\nabcde\r\n0\r\n\r\n")


def f_reset_before(sock, q):
    linger_reset(sock)
    return False


def f_reset_after(sock, q):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    # Most likely the headers are read before the RST comes; if not, the case is
    # /reset/before-headers, whose kind is the same.
    time.sleep(0.2)
    linger_reset(sock)
    return False


def f_drip_headers(sock, q):
    drip(sock, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return False


def f_drip_body(sock, q):
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    drip(sock, b"x" * 100)
    return False


def f_hang(sock, q):
    wait_for_eof(sock)
    return False


def f_big_line(sock, q):
    n = int(q.get("n", ["10485760"])[0])
    sock.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * max(n - 9, 0) +
                 b"\r\nContent-Length: 2\r\n\r\nok")
    return True


def f_many_headers(sock, q):
    n, size = int(q["n"][0]), int(q["size"][0])
    lines = b"".join(b"X-H%d: " % i + b"b" * max(size - 10 - len(str(i)), 0) + b"\r\n"
                     for i in range(n))
    sock.sendall(b"HTTP/1.1 200 OK\r\n" + lines + b"Content-Length: 2\r\n\r\nok")
    return True


def f_trailers(sock, q):
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
                 b"5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")
    return True


def f_redirect(sock, q):
    sock.sendall(b"HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n")
    return True


def f_not_found(sock, q):
    sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    return True


FAULTS = {
    "/ok": f_ok,
    "/cut/status": closes_after(b"HTTP/1.1 200 OK\r\n"),
    "/cut/mid-header": closes_after(b"HTTP/1.1 200 OK\r\nContent-Type: te"),
    "/cut/after-header": closes_after(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"),
    "/cut/no-blank-length": closes_after(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"),
    "/garbage-status": closes_after(b"HTTP/1.1 abc garbage\r\nContent-Length: 2\r\n\r\nok"),
    "/not-http": closes_after(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"),
    "/chunk/non-hex": chunked(b"zz"),
    "/chunk/huge": chunked(b"f" * 20),
    "/chunk/negative": chunked(b"-5"),
    "/chunk/truncated": closes_after(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     b"10\r\nabc"),
    "/short-body": closes_after(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789"),
    "/reset/before-headers": f_reset_before,
    "/reset/after-headers": f_reset_after,
    "/drip/headers": f_drip_headers,
    "/drip/body": f_drip_body,
    "/hang": f_hang,
    "/big-line": f_big_line,
    "/many-headers": f_many_headers,
    "/close-delimited": closes_after(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok"),
    "/trailers": f_trailers,
    "/redirect": f_redirect,
}


def serve_http(sock):
    """Answers requests on one connection until a fault ends it."""
    buf = b""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            req = read_request(sock, buf)
            if req is None:
                break
            path, query, buf = req
            if not FAULTS.get(path, f_not_found)(sock, query):
                break
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


def serve_tls(ctx):
    def handle(sock):
        try:
            sock.settimeout(30)  # a client that stalls its own handshake
            tls = ctx.wrap_socket(sock, server_side=True)
            tls.settimeout(None)
        except (OSError, ssl.SSLError):
            sock.close()
            return
        serve_http(tls)
    return handle


def read_client_hello(sock):
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def tls_stall(sock):
    read_client_hello(sock)
    wait_for_eof(sock)
    sock.close()


def tls_close(sock):
    read_client_hello(sock)
    sock.close()


def tls_reset(sock):
    read_client_hello(sock)
    linger_reset(sock)


def listen():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


def accept_loop(lsock, handler):
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=handler, args=(sock,), daemon=True).start()


def watchdog(pid):
    """Exits once the process that started us is gone (a spec run that crashed)."""
    while True:
        time.sleep(1)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(0)


def write_atomically(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


def main(argv):
    port_file = pid_file = tls = watch = None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--port-file":
            port_file = argv[i + 1]; i += 2
        elif a == "--pid-file":
            pid_file = argv[i + 1]; i += 2
        elif a == "--watch-pid":
            watch = int(argv[i + 1]); i += 2
        elif a == "--tls":
            tls = (argv[i + 1], argv[i + 2]); i += 3
        else:
            sys.exit(__doc__)
    threading.stack_size(512 * 1024)
    handlers = {"plain": serve_http, "tls_stall": tls_stall, "tls_close": tls_close,
                "tls_reset": tls_reset}
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        handlers["tls"] = serve_tls(ctx)
    ports = []
    for name, handler in handlers.items():
        lsock = listen()
        ports.append("%s %d\n" % (name, lsock.getsockname()[1]))
        threading.Thread(target=accept_loop, args=(lsock, handler), daemon=True).start()
    if pid_file:
        write_atomically(pid_file, "%d\n" % os.getpid())
    if port_file:
        write_atomically(port_file, "".join(ports))
    if watch:
        threading.Thread(target=watchdog, args=(watch,), daemon=True).start()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv)
